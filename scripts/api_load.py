"""Seed a database for API load tests and print what wrk needs.

    python scripts/api_load.py seed --db var/bench/api.db --insights 20000 --users 50 > var/bench/keys.json

creates a migrated SQLite database with a catalogue of N embedded insights (random unit vectors: search cost
does not depend on the text), `--users` users with one API key each and a brief for each user's today.
Then run the app and wrk as written in docs/benchmarks.md ("API" section); `wrk` gets a Lua script
(scripts/api_load.lua) that spreads requests over the keys.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def seed(db_path: Path, n_insights: int, n_users: int, per_episode: int = 20) -> dict[str, object]:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists():
        db_path.unlink()
    url = f"sqlite:///{db_path}"
    os.environ["DATABASE_URL"] = url
    from app import config

    config.reset_settings()
    from app.db import session_scope
    from app.migrate import upgrade
    from app.ml.encoder import DIM
    from app.models import Brief, BriefItem, Episode, Insight, Podcast, User
    from app.web.api.keys import create_api_key

    upgrade(url)
    rng = np.random.default_rng(7)
    keys: list[str] = []
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with session_scope(url) as s:
        podcasts = [Podcast(feed_url=f"https://show{i}.example.com/feed.xml", title=f"Show {i}") for i in range(50)]
        s.add_all(podcasts)
        s.flush()
        made = 0
        ep = 0
        while made < n_insights:
            e = Episode(
                podcast_id=podcasts[ep % len(podcasts)].id,
                guid=f"ep-{ep}",
                title=f"Episode {ep}",
                published_at=start + dt.timedelta(hours=ep),
                status="ready",
                transcript_source="whisper:faster-whisper",
            )
            s.add(e)
            s.flush()
            count = min(per_episode, n_insights - made)
            vecs = rng.standard_normal((count, DIM)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            s.add_all(
                Insight(
                    episode_id=e.id,
                    idx=i,
                    start=30.0 * i,
                    end=30.0 * i + 25,
                    text=f"Insight {made + i}: a specific claim with a number and a mechanism, said on the show.",
                    substance=0.6,
                    embedding=vecs[i].astype("<f4").tobytes(),
                    embedding_model="all-MiniLM-L6-v2",
                )
                for i in range(count)
            )
            made += count
            ep += 1
        s.flush()
        first_ids = [i for (i,) in s.query(Insight.id).order_by(Insight.id).limit(5)]
        today = dt.datetime.now(dt.UTC).date()
        for u in range(n_users):
            user = User(email=f"bench{u}@example.com", interests="sleep, markets", timezone="UTC", token=f"t{u}")
            s.add(user)
            s.flush()
            key, _ = create_api_key(s, user.id, "bench")
            keys.append(key)
            # Briefs for yesterday, today and tomorrow in UTC, so "today" exists whatever the clock says.
            for delta in (-1, 0, 1):
                b = Brief(user_id=user.id, local_date=today + dt.timedelta(days=delta))
                s.add(b)
                s.flush()
                s.add_all(
                    BriefItem(brief_id=b.id, insight_id=iid, position=p, score=0.9 - p / 10, why="matches: sleep")
                    for p, iid in enumerate(first_ids)
                )
    return {"db": str(db_path), "url": url, "insights": n_insights, "users": n_users, "keys": keys}


def cpu(db_path: Path, keys_lua: Path, n: int) -> dict[str, float]:
    """CPU ms per request of the app itself, in-process (no HTTP server, no client): what each request costs
    whatever else the machine is doing. Includes a bare route added to the same app as the framework floor."""
    import asyncio
    import re
    import time

    os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    os.environ.setdefault("PODBRIEF_VAR_DIR", str(db_path.parent / "var"))
    os.environ["PODBRIEF_API_RATE_PER_SECOND"] = os.environ["PODBRIEF_API_BURST"] = "1000000"
    from fastapi import Response

    from app import config
    from app.web.app import create_app

    config.reset_settings()
    app = create_app()

    @app.get("/_floor", include_in_schema=False)
    async def floor() -> Response:
        return Response(b"{}", media_type="application/json")

    key = re.findall(r'pb_[^"]*', keys_lua.read_text())[0]

    async def run(path: str) -> float:
        p, _, qs = path.partition("?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": p, "raw_path": p.encode(), "query_string": qs.encode(), "root_path": "",
            "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        status: list[int] = []

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))

        for _ in range(20):  # warm: index, model, caches
            await app(dict(scope), receive, send)
        start = time.process_time()
        for _ in range(n):
            await app(dict(scope), receive, send)
        assert set(status) == {200}, set(status)
        return (time.process_time() - start) / n * 1000

    paths = ["/_floor", "/api/v1/briefs/today", "/api/v1/insights?q=how%20does%20sleep%20help%20memory"]
    return {path: round(asyncio.run(run(path)), 3) for path in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("seed", help="create a database for load tests and print its keys as JSON")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--insights", type=int, default=20000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--lua", type=Path, help="also write a wrk Lua file with the keys")
    p = sub.add_parser("cpu", help="CPU ms per request in-process (run `seed` first)")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--lua", type=Path, required=True)
    p.add_argument("-n", type=int, default=1000)
    args = parser.parse_args()
    if args.cmd == "cpu":
        print(json.dumps({"cpu_ms_per_request": cpu(args.db.resolve(), args.lua, args.n)}))
        return 0
    info = seed(args.db, args.insights, args.users)
    if args.lua:
        args.lua.write_text(lua_for(info["keys"]))  # type: ignore[arg-type]
    print(json.dumps(info))
    return 0


def lua_for(keys: list[str]) -> str:
    """A wrk script: each request uses the next key (per-key rate limits stay realistic), path from env."""
    quoted = ",".join(f'"{k}"' for k in keys)
    return f"""-- generated by scripts/api_load.py
local keys = {{{quoted}}}
local i = 0
request = function()
  i = (i % #keys) + 1
  return wrk.format("GET", nil, {{["Authorization"] = "Bearer " .. keys[i]}})
end
done = function(summary, latency, requests)
  io.write(string.format("requests/s=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d non2xx=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


if __name__ == "__main__":
    sys.exit(main())
