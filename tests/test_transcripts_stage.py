"""Transcript stage: lease semantics, publisher transcripts, store idempotency, the duration cap."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.asr.types import Segment
from app.errors import PermanentError
from app.models import Episode, EpisodeStatus, Podcast, TranscriptSegment
from app.pipeline import transcripts
from app.pipeline.transcripts import LeaseLost, TranscriptJob, TranscriptResult

SPEECH = Path(__file__).parent / "data" / "speech"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)

VTT = (
    b"WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n<v Host>Heat pumps move heat.\n\n"
    b"00:00:03.000 --> 00:00:06.500\nThey work in winter too.\n"
)


def _episode(session: Session, **fields: Any) -> int:
    podcast = Podcast(feed_url=f"https://example.com/feed-{len(fields)}-{id(fields)}.xml", title="Show")
    session.add(podcast)
    session.flush()
    values: dict[str, Any] = {"guid": "ep-1", "title": "Episode", "status": EpisodeStatus.DOWNLOADED}
    values.update(fields)
    episode = Episode(podcast_id=podcast.id, **values)
    session.add(episode)
    session.flush()
    return episode.id


def _result() -> TranscriptResult:
    return TranscriptResult(
        segments=[Segment(0.0, 2.0, "First sentence.", speaker="A"), Segment(2.0, 4.5, "Second one.")],
        source="whisper:faster-whisper:tiny.en",
        duration=4.5,
    )


@pytest.mark.pg
def test_second_claimer_gets_none_until_the_lease_expires(session: Session) -> None:
    eid = _episode(session, audio_path=str(SPEECH / "jfk.mp3"))
    job = transcripts.claim(session, eid, owner="worker-a", now=NOW)
    assert job is not None and job.audio_path and job.owner == "worker-a"
    assert transcripts.claim(session, eid, owner="worker-b", now=NOW + dt.timedelta(minutes=5)) is None
    # The same owner may claim again (a redelivered message in the same worker).
    assert transcripts.claim(session, eid, owner="worker-a", now=NOW + dt.timedelta(minutes=1)) is not None
    later = NOW + dt.timedelta(hours=3)  # past settings.asr_lease_seconds (1 h)
    taken = transcripts.claim(session, eid, owner="worker-b", now=later)
    assert taken is not None and taken.owner == "worker-b"
    episode = session.get(Episode, eid)
    assert episode is not None and episode.lease_owner == "worker-b"


@pytest.mark.pg
def test_store_by_the_old_owner_refused_after_takeover(session: Session) -> None:
    eid = _episode(session, audio_path=str(SPEECH / "jfk.mp3"))
    old = transcripts.claim(session, eid, owner="worker-a", now=NOW)
    assert old is not None
    new = transcripts.claim(session, eid, owner="worker-b", now=NOW + dt.timedelta(hours=2))
    assert new is not None
    with pytest.raises(LeaseLost):
        transcripts.store(session, old, _result(), owner="worker-a")
    assert transcripts.store(session, new, _result(), owner="worker-b") == 2
    # The old owner coming back after the new one stored: a no-op, not an error (segments exist).
    assert transcripts.store(session, old, _result(), owner="worker-a") == 2


@pytest.mark.pg
def test_store_writes_segments_and_is_idempotent(session: Session) -> None:
    eid = _episode(session, audio_path=str(SPEECH / "jfk.mp3"))
    job = transcripts.claim(session, eid, owner="w", now=NOW)
    assert job is not None
    assert transcripts.store(session, job, _result(), owner="w") == 2
    assert transcripts.store(session, job, _result(), owner="w") == 2
    rows = session.scalars(
        select(TranscriptSegment).where(TranscriptSegment.episode_id == eid).order_by(TranscriptSegment.idx)
    ).all()
    assert [(r.idx, r.start, r.end, r.text, r.speaker) for r in rows] == [
        (0, 0.0, 2.0, "First sentence.", "A"),
        (1, 2.0, 4.5, "Second one.", None),
    ]
    episode = session.get(Episode, eid)
    assert episode is not None
    assert episode.status == EpisodeStatus.TRANSCRIBED
    assert episode.transcript_source == "whisper:faster-whisper:tiny.en"
    assert episode.lease_owner is None and episode.lease_until is None
    assert transcripts.claim(session, eid, owner="w2", now=NOW) is None  # done: nothing to claim


def test_nothing_to_transcribe_is_not_claimable(session: Session) -> None:
    eid = _episode(session, status=EpisodeStatus.NEW)
    assert transcripts.claim(session, eid, owner="w", now=NOW) is None
    assert transcripts.claim(session, 999_999, owner="w", now=NOW) is None


def test_publisher_transcript_fetched_through_the_guarded_client(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # app.net re-exports the function `fetch`, which shadows the module name: import the module itself.
    fetch_module = importlib.import_module("app.net.fetch")

    calls: list[tuple[str, int]] = []

    def fake_fetch(url: str, *, max_bytes: int, **_: Any) -> Any:
        calls.append((url, max_bytes))
        return fetch_module.FetchResult(status=200, url=url, permanent_url=None, headers={}, content=VTT)

    monkeypatch.setattr(fetch_module, "fetch", fake_fetch)
    eid = _episode(
        session, status=EpisodeStatus.NEW, transcript_url="https://example.com/ep1.vtt", transcript_type="text/vtt"
    )
    job = transcripts.claim(session, eid, owner="w", now=NOW)
    assert job is not None
    result = transcripts.run(job)
    assert calls and calls[0][0] == "https://example.com/ep1.vtt" and calls[0][1] > 0
    assert result.source == "publisher:vtt"
    assert transcripts.store(session, job, result, owner="w") == 2
    episode = session.get(Episode, eid)
    assert episode is not None and episode.transcript_source == "publisher:vtt"
    count = session.scalar(
        select(func.count()).select_from(TranscriptSegment).where(TranscriptSegment.episode_id == eid)
    )
    assert count == 2


def test_audio_over_the_cap_is_a_permanent_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import config

    monkeypatch.setenv("PODBRIEF_ASR_MAX_AUDIO_SECONDS", "5")
    config.reset_settings()
    job = TranscriptJob(
        episode_id=1,
        owner="w",
        lease_until=NOW,
        audio_path=str(SPEECH / "jfk.mp3"),
        transcript_url=None,
        transcript_type=None,
    )
    with pytest.raises(PermanentError, match="limit"):
        transcripts.run(job)


@pytest.mark.slow
def test_whisper_path_end_to_end(session: Session) -> None:
    eid = _episode(session, audio_path=str(SPEECH / "jfk.mp3"))
    job = transcripts.claim(session, eid, owner="w", now=NOW)
    assert job is not None
    result = transcripts.run(job)
    assert result.source == "whisper:faster-whisper:tiny.en"
    assert transcripts.store(session, job, result, owner="w") >= 1
    text = " ".join(s.text for s in result.segments).lower()
    assert "ask not what your country can do for you" in text.replace(",", "")
