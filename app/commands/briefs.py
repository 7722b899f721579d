"""Insight/brief commands: `podbrief eval briefs`, `podbrief bench briefs`, `podbrief bench embed`.

(`podbrief brief --email EMAIL --now` needs delivery and lives with the lead's commands.)

eval briefs: a fresh throw-away database, the dataset's episodes ingested (segment texts as the transcript, or
Whisper on DIR/<episode id>.mp3), users created from their `interests`, each user's brief built for the day
after the latest episode, printed as {"users": [{"id", "items": [{"episode_id", "text", "start", "end",
"why"}]}]}. Only `id`, `podcast`, `title`, `published`, `segments[].text` (and optional start/end) and the
users' `id`/`interests` are read: labels (`kind`, `topic`, `relevant_topics`, `speaker`) never are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPEECH_WORDS_PER_SECOND = 2.5  # for datasets without segment times: an ordinary speaking rate
TURN_GAP_SECONDS = 0.4


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = subparsers.add_parser("eval", help="evaluate against a labeled dataset")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    p = ev_sub.add_parser("briefs", help="build every dataset user's brief in a throw-away database")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--audio-dir", type=Path, default=None, help="transcribe DIR/<episode id>.mp3 with Whisper")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(handler=cmd_eval_briefs)

    bench = subparsers._name_parser_map.get("bench")  # another area may have created `bench` already
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks")
    bench_sub = _subparsers_of(bench)
    p = bench_sub.add_parser("briefs", help="rank a synthetic catalogue for many users")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--insights", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bench_briefs)
    p = bench_sub.add_parser("embed", help="embedding throughput on ~30-word passages")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-baseline", action="store_true", help="skip the torch baseline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_bench_embed)


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="bench_command", required=True)


# --- eval briefs ------------------------------------------------------------------------------------------


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _text_segments(episode: dict[str, Any]) -> list[tuple[float, float, str]]:
    """Segment texts with their times, or times made up from word counts when the dataset has none."""
    out: list[tuple[float, float, str]] = []
    t = 0.0
    for seg in episode.get("segments", []):
        text = str(seg.get("text", ""))
        if "start" in seg and "end" in seg:
            start, end = float(seg["start"]), float(seg["end"])
        else:
            start, end = t, t + max(0.5, len(text.split()) / SPEECH_WORDS_PER_SECOND)
        out.append((start, end, text))
        t = end + TURN_GAP_SECONDS
    return out


_EVAL_ENV = ("PODBRIEF_VAR_DIR", "DATABASE_URL", "PODBRIEF_FIRST_BRIEF_LOOKBACK_DAYS")


def run_eval(dataset: dict[str, Any], audio_dir: Path | None, work: Path) -> dict[str, Any]:
    """Run the evaluation in a throw-away database under `work`; the process's settings are restored after."""
    from app import config, db

    saved = {k: os.environ.get(k) for k in _EVAL_ENV}
    try:
        return _run_eval(dataset, audio_dir, work)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        config.reset_settings()
        db.dispose_engines()


def _run_eval(dataset: dict[str, Any], audio_dir: Path | None, work: Path) -> dict[str, Any]:
    from app import config, db
    from app.migrate import upgrade

    # Load the encoder (and its ONNX export cache) under the real var/ before settings move to the temp dir.
    from app.ml import encoder

    encoder.backend()
    episodes = dataset.get("episodes", [])
    published = [_parse_time(e.get("published")) for e in episodes]
    known = [p for p in published if p is not None]
    latest = max(known) if known else dt.datetime.now(dt.UTC)
    earliest = min(known) if known else latest
    local_date = latest.date() + dt.timedelta(days=1)
    now = dt.datetime.combine(local_date, dt.time(7, 0), tzinfo=dt.UTC)

    url = f"sqlite:///{work / 'eval.db'}"
    os.environ["PODBRIEF_VAR_DIR"] = str(work / "var")
    os.environ["DATABASE_URL"] = url
    # A first brief covers the whole dataset, however far back its episodes go.
    os.environ["PODBRIEF_FIRST_BRIEF_LOOKBACK_DAYS"] = str(max(7, (now - earliest).days + 1))
    config.reset_settings()
    db.dispose_engines()
    upgrade(url)

    from app.models import Episode, EpisodeStatus, Podcast, TranscriptSegment, User
    from app.pipeline import briefs, embeddings, insights

    ep_ids: dict[int, str] = {}
    with db.session_scope(url) as session:
        podcasts: dict[str, Podcast] = {}
        for e, pub in zip(episodes, published, strict=True):
            show = str(e.get("podcast") or "eval")
            if show not in podcasts:
                podcasts[show] = Podcast(feed_url=f"eval://{len(podcasts)}", title=show)
                session.add(podcasts[show])
            ep = Episode(
                podcast=podcasts[show], guid=str(e["id"]), title=str(e.get("title", "")), published_at=pub or latest
            )
            session.add(ep)
            session.flush()
            ep_ids[ep.id] = str(e["id"])
            if audio_dir is None:
                for idx, (start, end, text) in enumerate(_text_segments(e)):
                    session.add(TranscriptSegment(episode_id=ep.id, idx=idx, start=start, end=end, text=text))
                ep.status = EpisodeStatus.TRANSCRIBED
            else:
                ep.audio_path = str(audio_dir / f"{e['id']}.mp3")
                ep.status = EpisodeStatus.DOWNLOADED
        for u in dataset.get("users", []):
            session.add(
                User(
                    email=f"{u['id']}@eval.invalid".lower(),
                    interests=str(u.get("interests", "")),
                    token=secrets.token_urlsafe(24),
                    confirmed_at=now,
                )
            )
    if audio_dir is not None:
        _transcribe_all(url, list(ep_ids))
    with db.session_scope(url) as session:
        for ep_id in ep_ids:
            insights.extract(session, ep_id)
            embeddings.embed_episode(session, ep_id)
    out: list[dict[str, Any]] = []
    with db.session_scope(url) as session:
        from sqlalchemy import select

        from app.models import Brief

        for u in dataset.get("users", []):
            user_id = session.scalar(select(User.id).where(User.email == f"{u['id']}@eval.invalid".lower()))
            assert user_id is not None
            brief_id = briefs.build(session, user_id, local_date, now=now)
            items: list[dict[str, Any]] = []
            if brief_id is not None:
                brief = session.get(Brief, brief_id)
                assert brief is not None
                for it in brief.items:
                    ins = it.insight
                    items.append(
                        {
                            "episode_id": ep_ids[ins.episode_id],
                            "text": ins.text,
                            "start": round(ins.start, 2),
                            "end": round(ins.end, 2),
                            "why": it.why,
                        }
                    )
            out.append({"id": u["id"], "items": items})
    db.dispose_engines()
    return {"users": out}


def _transcribe_all(url: str, episode_ids: list[int]) -> None:
    from app import db
    from app.pipeline import transcripts

    owner = f"eval-{os.getpid()}"
    for ep_id in episode_ids:
        with db.session_scope(url) as session:
            job = transcripts.claim(session, ep_id, owner=owner)
        if job is None:
            continue
        result = transcripts.run(job)
        with db.session_scope(url) as session:
            transcripts.store(session, job, result, owner=owner)


def cmd_eval_briefs(args: argparse.Namespace) -> int:
    dataset = json.loads(Path(args.dataset).read_text())
    audio_dir = Path(args.audio_dir).resolve() if args.audio_dir else None
    if audio_dir is not None and not audio_dir.is_dir():
        print(f"error: audio dir not found: {audio_dir}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="podbrief-eval-") as tmp:
        result = run_eval(dataset, audio_dir, Path(tmp))
    print(json.dumps(result, indent=1))
    return 0


# --- bench briefs -----------------------------------------------------------------------------------------


def bench_briefs(users: int, insights: int, *, seed: int = 0, dim: int = 384) -> dict[str, Any]:
    """Rank a synthetic catalogue (topic-clustered unit vectors) for many users with rank_users()."""
    import numpy as np

    from app.pipeline.ranking import Catalogue, Profile, rank_users

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((64, dim)).astype(np.float32)
    per_episode = 5
    n_eps = max(1, insights // per_episode)
    ep_topic = rng.integers(0, len(topics), n_eps)
    episode = np.repeat(np.arange(n_eps), per_episode)[:insights]
    if len(episode) < insights:
        episode = np.concatenate([episode, np.full(insights - len(episode), n_eps - 1)])
    vecs = topics[ep_topic[episode]] + 0.9 * rng.standard_normal((insights, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    start = np.tile(np.arange(per_episode) * 60.0, n_eps + 1)[:insights].astype(np.float32)
    cat = Catalogue(
        ids=np.arange(insights, dtype=np.int64),
        vecs=vecs,
        episode=episode.astype(np.int64),
        podcast=(episode // 4).astype(np.int64),
        substance=rng.uniform(0.3, 0.9, insights).astype(np.float32),
        age_days=rng.uniform(0, 3, insights).astype(np.float32),
        start=start,
        end=start + 20.0,
    )
    profiles: list[Profile] = []
    for _ in range(users):
        n = int(rng.integers(1, 4))
        q = topics[rng.integers(0, len(topics), n)] + 1.2 * rng.standard_normal((n, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        profiles.append(Profile(phrases=[f"interest {i}" for i in range(n)], phrase_vecs=q))
    t0 = time.perf_counter()
    briefs = rank_users(cat, profiles)
    wall = time.perf_counter() - t0
    return {
        "users": users,
        "insights": insights,
        "wall_seconds": round(wall, 3),
        "briefs_per_s": round(users / wall, 1) if wall > 0 else None,
        "mean_items": round(sum(len(b) for b in briefs) / max(1, users), 2),
    }


def cmd_bench_briefs(args: argparse.Namespace) -> int:
    print(json.dumps(bench_briefs(args.users, args.insights, seed=args.seed)))
    return 0


# --- bench embed ------------------------------------------------------------------------------------------

_WORD_POOL = (
    "the model memory training cost people research study found percent more less energy solar battery grid "
    "market index fund retirement tax brain sleep history plague wages startup revenue growth runners heat "
    "because which means than about every year later twice half during after before most often rarely large "
    "small trial evidence dose risk rate price demand supply network layer cache signal effect change"
)


def synthetic_passages(n: int, words: int = 30, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    vocab = _WORD_POOL.split()
    out = []
    for _ in range(n):
        k = max(5, int(rng.gauss(words, 6)))
        ws = [rng.choice(vocab) for _ in range(k)]
        out.append(" ".join(ws).capitalize() + ".")
    return out


def bench_embed(n: int, *, batch_size: int = 64, baseline: bool = True) -> dict[str, Any]:
    from app.ml import encoder

    texts = synthetic_passages(n)
    chosen = encoder.backend()
    runs: dict[str, dict[str, float]] = {}
    for name in [chosen] + (["torch"] if baseline and chosen != "torch" else []):
        encoder.encode(texts[: min(64, n)], batch_size=batch_size, backend_name=name)  # warm-up
        t0 = time.perf_counter()
        encoder.encode(texts, batch_size=batch_size, backend_name=name)
        wall = time.perf_counter() - t0
        runs[name] = {"wall_seconds": round(wall, 3), "passages_per_s": round(n / wall, 1)}
    result: dict[str, Any] = {
        "passages": n,
        "mean_words": round(sum(len(t.split()) for t in texts) / max(1, n), 1),
        "wall_seconds": runs[chosen]["wall_seconds"],
        "passages_per_s": runs[chosen]["passages_per_s"],
        "backend": chosen,
    }
    if "torch" in runs and chosen != "torch":
        result["baseline"] = {"backend": "torch", **runs["torch"]}
        result["speedup_vs_torch"] = round(runs["torch"]["wall_seconds"] / runs[chosen]["wall_seconds"], 2)
    return result


def cmd_bench_embed(args: argparse.Namespace) -> int:
    print(json.dumps(bench_embed(args.n, batch_size=args.batch_size, baseline=not args.no_baseline)))
    return 0
