"""A worker SIGKILLed in the middle of a transcription: after a restart every episode is transcribed, exactly
one transcript is stored per episode, and the pipeline finishes (the lease expires, reconcile re-dispatches)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import config
from app.db import session_scope
from app.demo import audio_file
from app.models import Episode, EpisodeStatus, Podcast, TranscriptSegment
from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigkill_mid_transcription_loses_nothing_and_stores_once(
    db_url: str, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.celery_app import make_celery

    audio_dir = env / "audio"
    audio_dir.mkdir()
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        podcast = Podcast(feed_url="https://shows.example.com/feed.xml", title="Example")
        session.add(podcast)
        session.flush()
        ids = []
        for n in (1, 2):
            path = audio_dir / f"ep{n}.mp3"
            shutil.copy(audio_file(n), path)
            ep = Episode(podcast_id=podcast.id, guid=f"g{n}", title=f"Episode {n}", published_at=now,
                         status=EpisodeStatus.DOWNLOADED, audio_path=str(path))
            session.add(ep)
            session.flush()
            ids.append(ep.id)

    extra = {
        "DATABASE_URL": db_url,
        "PODBRIEF_VAR_DIR": str(env),
        "PODBRIEF_ASR_LEASE_SECONDS": "60",
        "PODBRIEF_STALL_AFTER_SECONDS": "5",
        "PODBRIEF_BEAT_RECONCILE_SECONDS": "2",
        "PODBRIEF_BEAT_FEEDS_SECONDS": "3600",
        "PODBRIEF_BEAT_BRIEFS_SECONDS": "3600",
    }
    child_env = procs.child_env(extra)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    config.reset_settings()
    producer = make_celery()
    logs = tmp_path / "logs"
    logs.mkdir()

    def leased() -> bool:
        with session_scope() as session:
            return bool(session.scalar(select(func.count()).select_from(Episode)
                                       .where(Episode.lease_owner.is_not(None))))

    first = procs.worker(child_env, logs, name="worker1", concurrency=1)
    try:
        for episode_id in ids:
            producer.send_task("podbrief.transcribe", args=[episode_id], queue="asr")
        procs.wait_for(leased, 180, "a transcription to start", [first])
    finally:
        first.kill()
    with session_scope() as session:
        killed = session.scalar(select(Episode).where(Episode.lease_owner.is_not(None)))
        assert killed is not None
        # Killed mid-run: the lease is held and nothing was stored for it.
        assert session.scalar(select(func.count()).select_from(TranscriptSegment)
                              .where(TranscriptSegment.episode_id == killed.id)) == 0
        killed_id = killed.id

    second = procs.worker(child_env, logs, name="worker2")
    beat = procs.beat(child_env, logs)
    try:
        def all_ready() -> bool:
            with session_scope() as session:
                statuses = session.scalars(select(Episode.status)).all()
                return all(s == EpisodeStatus.READY for s in statuses)

        procs.wait_for(all_ready, 420, "both episodes ready", [second, beat])
    finally:
        beat.stop()
        second.stop()

    with session_scope() as session:
        for episode_id in ids:
            ep = session.get(Episode, episode_id)
            assert ep is not None
            assert ep.lease_owner is None and (ep.transcript_source or "").startswith("whisper")
            idxs = session.scalars(select(TranscriptSegment.idx).where(TranscriptSegment.episode_id == episode_id)
                                   .order_by(TranscriptSegment.idx)).all()
            assert idxs == list(range(len(idxs))) and idxs, "one transcript, stored once"
        killed_ep = session.get(Episode, killed_id)
        assert killed_ep is not None and killed_ep.attempts >= 1  # picked up again by reconcile
