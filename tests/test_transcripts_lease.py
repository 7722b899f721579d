"""The lease heartbeat (app.pipeline.lease): a run longer than the lease keeps it, and only while it is ours.

Real time with a 1 s lease renewed every 0.2 s; every step commits in its own session_scope() (as the task does),
so the heartbeat's own connection sees the rows on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from app import config
from app.asr.types import Segment
from app.db import session_scope
from app.models import Episode, EpisodeStatus, Podcast, utcnow
from app.pipeline import lease, transcripts
from app.pipeline.transcripts import TranscriptJob, TranscriptResult

SPEECH = Path(__file__).parent / "data" / "speech"
LEASE = 1.0
INTERVAL = 0.2


@pytest.fixture
def short_lease(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PODBRIEF_ASR_LEASE_SECONDS", str(int(LEASE)))
    config.reset_settings()
    return db_url


def _episode() -> int:
    with session_scope() as session:
        podcast = Podcast(feed_url="https://example.com/lease.xml", title="Show")
        session.add(podcast)
        session.flush()
        episode = Episode(
            podcast_id=podcast.id, guid="ep", title="E", status=EpisodeStatus.DOWNLOADED,
            audio_path=str(SPEECH / "jfk.mp3"),
        )
        session.add(episode)
        session.flush()
        return episode.id


def _claim(eid: int, owner: str) -> TranscriptJob | None:
    with session_scope() as session:
        return transcripts.claim(session, eid, owner=owner, now=utcnow())


def _lease(eid: int) -> tuple[str | None, dt.datetime | None]:
    with session_scope() as session:
        episode = session.get(Episode, eid)
        assert episode is not None
        return episode.lease_owner, episode.lease_until


@pytest.mark.pg
def test_a_run_longer_than_the_lease_keeps_it(short_lease: str) -> None:
    eid = _episode()
    assert _claim(eid, "worker-a") is not None
    heartbeat = lease.Heartbeat(eid, "worker-a", interval=INTERVAL)
    with heartbeat:
        deadline = time.monotonic() + 2.5 * LEASE  # the "run": well past the 1 s lease
        while time.monotonic() < deadline:
            assert _claim(eid, "worker-b") is None, "another worker took over a lease that was being renewed"
            time.sleep(0.25)
        owner, until = _lease(eid)
        assert owner == "worker-a" and until is not None and until > utcnow()
    assert not heartbeat.alive and not heartbeat.lost
    # Carrying a 1 s lease through a 2.5 s run takes at least 2 renewals. Ask for that, not for the ~12 the
    # 0.2 s interval gives on an idle machine: a loaded CI box delays the thread (7 seen once), and the claims
    # by worker-b above already prove the lease never lapsed.
    assert heartbeat.renewals >= 2

    # Stopped in the `with` exit: the lease is no longer extended, so it expires and may be taken over.
    _, until = _lease(eid)
    time.sleep(3 * INTERVAL)
    assert _lease(eid)[1] == until
    assert until is not None
    time.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.05)
    taken = _claim(eid, "worker-b")
    assert taken is not None and taken.owner == "worker-b"


@pytest.mark.pg
def test_renewal_does_nothing_once_another_owner_holds_the_row(short_lease: str) -> None:
    eid = _episode()
    assert _claim(eid, "worker-a") is not None
    time.sleep(LEASE + 0.1)  # worker-a stalled past its lease (no heartbeat) ...
    assert _claim(eid, "worker-b") is not None  # ... and worker-b took the episode over
    before = _lease(eid)
    assert lease.renew(eid, "worker-a", seconds=3600) is False
    assert _lease(eid) == before

    heartbeat = lease.Heartbeat(eid, "worker-a", interval=INTERVAL).start()
    deadline = time.monotonic() + 5
    while heartbeat.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not heartbeat.alive, "the heartbeat kept going on a row that is not ours"
    assert heartbeat.lost and heartbeat.renewals == 0
    assert _lease(eid) == before  # worker-b's lease untouched
    heartbeat.stop()  # idempotent after it stopped itself


@pytest.mark.pg
def test_renew_extends_only_our_lease_and_nothing_once_released(short_lease: str) -> None:
    eid = _episode()
    assert _claim(eid, "worker-a") is not None
    later = utcnow() + dt.timedelta(minutes=5)
    assert lease.renew(eid, "worker-a", seconds=60, now=later) is True
    assert _lease(eid) == ("worker-a", later + dt.timedelta(seconds=60))
    with session_scope() as session:  # store() releases the lease: a late renewal must not resurrect it
        job = transcripts.claim(session, eid, owner="worker-a", now=utcnow())
        assert job is not None
        result = TranscriptResult(segments=[Segment(0.0, 1.0, "Hello.")], source="whisper:test")
        transcripts.store(session, job, result, owner="worker-a")
    assert lease.renew(eid, "worker-a", seconds=60) is False
    assert _lease(eid) == (None, None)


def test_interval_must_be_shorter_than_the_lease(env: Path) -> None:
    assert lease.Heartbeat(1, "w", lease_seconds=30).interval == pytest.approx(10)
    with pytest.raises(ValueError):
        lease.Heartbeat(1, "w", lease_seconds=1, interval=1)


@pytest.mark.pg
def test_transcribe_task_renews_the_lease_while_run_works(
    short_lease: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """workers.tasks.transcribe wraps run() in the heartbeat: a 2.5 s run under a 1 s lease stores normally."""
    from workers import tasks

    eid = _episode()
    seen: list[Any] = []

    def long_run(job: TranscriptJob) -> TranscriptResult:
        deadline = time.monotonic() + 2.5 * LEASE
        while time.monotonic() < deadline:
            seen.append(_claim(job.episode_id, "worker-b"))
            time.sleep(0.25)
        return TranscriptResult(segments=[Segment(0.0, 1.0, "Hello there.")], source="whisper:test", duration=1.0)

    enqueued: list[int] = []
    monkeypatch.setattr(transcripts, "run", long_run)
    monkeypatch.setattr(tasks.extract_insights, "delay", enqueued.append)
    tasks.transcribe(eid)
    assert seen and all(claim is None for claim in seen)
    assert enqueued == [eid]
    with session_scope() as session:
        episode = session.get(Episode, eid)
        assert episode is not None
        assert episode.status == EpisodeStatus.TRANSCRIBED and episode.transcript_source == "whisper:test"
        assert episode.lease_owner is None and episode.lease_until is None
