"""A broken publisher transcript (404, garbage) with no audio yet falls back to the enclosure and Whisper.

Task level, against a real HTTP server on 127.0.0.1: the feed is polled by workers.tasks.poll_feed, and every
task the chain enqueues is run in-process in order (`delay` is recorded instead of sent to a broker). A
transient transcript error (503) is retried as before, never treated as unusable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry

from app import asr, config
from app.asr.types import Segment, Transcript
from app.db import session_scope
from app.errors import TransientError
from app.models import Episode, EpisodeStatus
from app.pipeline import feeds
from tests.test_net_localserver import LocalServer, server  # noqa: F401

SPEECH = Path(__file__).parent / "data" / "speech" / "jfk.mp3"
VTT = b"WEBVTT\n\n00:00:00.000 --> 00:00:03.000\nAsk not what your country can do for you.\n"
GARBAGE = b"<!doctype html><html><body><h1>Oops</h1>Our transcript service is down.</body></html>"
CHAIN = ("poll_feed", "download_audio", "transcribe", "extract_insights")


def feed_xml(*, enclosure: bool = True) -> bytes:
    published = format_datetime(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), usegmt=True)
    enc = '<enclosure url="/audio/ep1.mp3" type="audio/mpeg" length="100000"/>' if enclosure else ""
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">'
        "<channel><title>Show</title><item><guid>ep1</guid><title>Episode 1</title>"
        f'<pubDate>{published}</pubDate>{enc}<podcast:transcript url="/t/ep1.vtt" type="text/vtt"/>'
        "</item></channel></rss>"
    ).encode()


class Queue:
    """Stands in for the broker: records what the tasks enqueue and runs it in-process, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from workers import tasks

        self.tasks = tasks
        self.pending: list[tuple[str, tuple[Any, ...]]] = []
        self.log: list[str] = []
        self.retries: list[Exception] = []
        for name in CHAIN:
            monkeypatch.setattr(getattr(tasks, name), "delay", self._recorder(name))

        def retry(*, exc: Exception, countdown: int, **_: Any) -> Retry:
            self.retries.append(exc)
            return Retry(exc=exc, when=countdown)

        monkeypatch.setattr(tasks.transcribe, "retry", retry)

    def _recorder(self, name: str) -> Callable[..., None]:
        def delay(*args: Any) -> None:
            self.log.append(name)
            self.pending.append((name, args))

        return delay

    def drain(self, *, stop_at: str = "extract_insights") -> None:
        while self.pending and self.pending[0][0] != stop_at:
            name, args = self.pending.pop(0)
            getattr(self.tasks, name)(*args)


@pytest.fixture
def site(db_url: str, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:  # noqa: F811
    monkeypatch.setenv("PODBRIEF_FETCH_ALLOW_HOSTS", server.host)
    config.reset_settings()
    server.reply("/audio/ep1.mp3", 200, SPEECH.read_bytes(), {"Content-Type": "audio/mpeg"})
    return server


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Queue:
    return Queue(monkeypatch)


@pytest.fixture
def fake_whisper(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ASR engine replaced by a stub (the routing is under test here; the slow test runs the real one)."""
    heard: list[str] = []

    def transcribe_file(path: str, **_: Any) -> Transcript:
        heard.append(str(path))
        return Transcript(segments=[Segment(0.0, 3.0, "Ask not.")], duration=11.0, engine="stub", model="tiny.en")

    monkeypatch.setattr(asr, "transcribe_file", transcribe_file)
    return heard


def poll(site: LocalServer, queue: Queue, *, enclosure: bool = True) -> int:
    site.reply("/feed.xml", 200, feed_xml(enclosure=enclosure), {"Content-Type": "application/rss+xml"})
    with session_scope() as session:
        podcast_id = feeds.subscribe(session, site.url("/feed.xml")).id
    [episode_id] = queue.tasks.poll_feed(podcast_id)
    return int(episode_id)


def episode(episode_id: int) -> Episode:
    with session_scope() as session:
        row = session.get(Episode, episode_id)
        assert row is not None
        return row


@pytest.mark.pg
@pytest.mark.parametrize(
    ("status", "body", "why"), [(404, b"", "HTTP 404"), (200, GARBAGE, "WebVTT")], ids=["404", "garbage"]
)
def test_broken_publisher_transcript_falls_back_to_the_enclosure(
    site: LocalServer, queue: Queue, fake_whisper: list[str], status: int, body: bytes, why: str
) -> None:
    site.reply("/t/ep1.vtt", status, body, {"Content-Type": "text/vtt"})
    eid = poll(site, queue)
    assert queue.log == ["transcribe"]  # a linked transcript: no audio download at first
    queue.drain()
    # transcribe (publisher fails) -> download_audio -> transcribe (Whisper) -> extract_insights
    assert queue.log == ["transcribe", "download_audio", "transcribe", "extract_insights"]
    assert queue.retries == []
    row = episode(eid)
    assert row.status == EpisodeStatus.TRANSCRIBED
    assert (row.transcript_source or "").startswith("whisper:")
    assert row.transcript_url is None and row.transcript_type is None
    assert (row.error or "").startswith("publisher transcript unusable") and why in (row.error or "")
    assert site.url("/t/ep1.vtt") in (row.error or "")
    assert row.lease_owner is None
    assert fake_whisper == [row.audio_path]
    assert site.hits("/t/ep1.vtt") == 1 and site.hits("/audio/ep1.mp3") == 1


@pytest.mark.pg
def test_transcript_503_is_retried_not_fallen_back(site: LocalServer, queue: Queue, fake_whisper: list[str]) -> None:
    site.reply("/t/ep1.vtt", 503, b"busy", {"Content-Type": "text/plain"})
    eid = poll(site, queue)
    with pytest.raises(Retry):
        queue.drain()
    assert len(queue.retries) == 1 and isinstance(queue.retries[0], TransientError)
    assert "HTTP 503" in queue.retries[0].reason  # type: ignore[attr-defined]
    row = episode(eid)
    assert row.status == EpisodeStatus.NEW and row.error is None
    assert row.transcript_url == site.url("/t/ep1.vtt")  # the link is kept for the retry
    # The lease is given back: the retry may land on another worker process (another owner) and must not
    # wait for this one's lease to expire.
    assert row.lease_owner is None and row.lease_until is None
    assert queue.log == ["transcribe"] and site.hits("/audio/ep1.mp3") == 0 and fake_whisper == []

    # The retry (same task, same owner) finds the transcript back and uses it.
    site.reply("/t/ep1.vtt", 200, VTT, {"Content-Type": "text/vtt"})
    queue.tasks.transcribe(eid)
    row = episode(eid)
    assert row.status == EpisodeStatus.TRANSCRIBED and row.transcript_source == "publisher:vtt"
    assert site.hits("/audio/ep1.mp3") == 0 and fake_whisper == []


@pytest.mark.pg
def test_broken_transcript_and_no_enclosure_still_fails(
    site: LocalServer, queue: Queue, fake_whisper: list[str]
) -> None:
    site.reply("/t/ep1.vtt", 404)
    eid = poll(site, queue, enclosure=False)
    queue.drain()
    row = episode(eid)
    assert row.status == EpisodeStatus.FAILED
    assert "HTTP 404" in (row.error or "") and "no audio enclosure" in (row.error or "")
    assert queue.log == ["transcribe"] and fake_whisper == []


@pytest.mark.slow
def test_garbage_transcript_transcribed_by_whisper_end_to_end(site: LocalServer, queue: Queue) -> None:
    site.reply("/t/ep1.vtt", 200, GARBAGE, {"Content-Type": "text/vtt"})
    eid = poll(site, queue)
    queue.drain()
    assert queue.log == ["transcribe", "download_audio", "transcribe", "extract_insights"]
    row = episode(eid)
    assert row.status == EpisodeStatus.TRANSCRIBED
    assert (row.transcript_source or "").startswith("whisper:")
    with session_scope() as session:
        text = " ".join(s.text for s in session.get(Episode, eid).segments).lower()  # type: ignore[union-attr]
    assert "ask not what your country can do for you" in text.replace(",", "")
