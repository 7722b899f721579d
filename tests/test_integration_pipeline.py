"""The real path, end to end: a feed served over HTTP -> real Celery worker and beat -> download ->
transcription (bundled Whisper) -> insights -> embeddings -> brief -> email received by a real SMTP server.

Runs on SQLite + the filesystem broker (the embedded default) and, in CI, on PostgreSQL + Redis.
"""

from __future__ import annotations

import email
import email.policy
import os
import secrets
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.demo import DEMO_INTERESTS
from app.demo_seed import demo_episodes_settled
from app.models import Brief, Delivery, DeliveryStatus, Episode, EpisodeStatus, Podcast, User, utcnow
from app.pipeline import feeds
from tests import procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(env: Path) -> Iterator[tuple[int, Path]]:
    from app import smtp_sink

    port = free_port()
    mail_dir = env / "sink"
    handle = smtp_sink.start("127.0.0.1", port, mail_dir)
    try:
        yield port, mail_dir
    finally:
        handle.stop()


def service_env(db_url: str, var: Path, smtp_port: int, feed_base: str, backend: str) -> dict[str, str]:
    extra = {
        "DATABASE_URL": db_url,
        "PODBRIEF_VAR_DIR": str(var),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "PODBRIEF_SMTP_SINK": "0",
        "PODBRIEF_FETCH_ALLOW_HOSTS": feed_base.split("://", 1)[1],
        "PODBRIEF_BEAT_FEEDS_SECONDS": "2",
        "PODBRIEF_BEAT_BRIEFS_SECONDS": "3",
        "PODBRIEF_BEAT_RECONCILE_SECONDS": "5",
        "PODBRIEF_BASE_URL": "http://127.0.0.1:8000",
    }
    if backend == "postgres":
        redis_url = os.environ.get("PODBRIEF_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        extra["REDIS_URL"] = redis_url
    return procs.child_env(extra)


def messages(mail_dir: Path) -> list[EmailMessage]:
    out = []
    for path in sorted(mail_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


@pytest.mark.pg
def test_feed_to_inbox_with_real_worker_and_beat(
    db_url: str, env: Path, smtp: tuple[int, Path], tmp_path: Path
) -> None:
    smtp_port, mail_dir = smtp
    backend = "postgres" if db_url.startswith("postgresql") else "sqlite"
    with procs.demo_feed_server() as feed_base:
        with session_scope() as session:
            podcast = feeds.subscribe(session, f"{feed_base}/demo/feed.xml")
            session.flush()
            podcast_id = podcast.id

        envv = service_env(db_url, env, smtp_port, feed_base, backend)
        logs = tmp_path / "logs"
        logs.mkdir()
        worker = procs.worker(envv, logs)
        beat = procs.beat(envv, logs)
        try:
            # Beat finds the new feed, the worker takes each episode through every stage...
            procs.wait_for(lambda: demo_episodes_settled(podcast_id), 600, "all episodes processed", [worker, beat])
            # ...then a reader whose delivery hour has come gets the brief from beat's next tick.
            with session_scope() as session:
                session.add(User(email="reader@example.com", interests=DEMO_INTERESTS, timezone="UTC",
                                 delivery_hour=0, confirmed_at=utcnow(), token=secrets.token_urlsafe(16)))
            procs.wait_for(lambda: len(list(mail_dir.glob("*.eml"))) >= 1, 120, "the brief email", [worker, beat])
            # A few more beat ticks: nothing is sent twice.
            time.sleep(8)
        finally:
            beat.stop()
            worker.stop()

    msgs = [m for m in messages(mail_dir) if m["To"] and "reader@example.com" in m["To"]]
    assert len(msgs) == 1, [m["Subject"] for m in msgs]
    msg = msgs[0]
    assert msg.get_content_type() == "multipart/alternative"
    assert {p.get_content_type() for p in msg.iter_parts()} == {"text/plain", "text/html"}
    assert msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text_part = msg.get_body(preferencelist=("plain",))
    assert text_part is not None
    text = text_part.get_content()

    with session_scope() as session:
        podcast = session.get(Podcast, podcast_id)
        assert podcast is not None and podcast.last_error is None
        episodes = session.scalars(select(Episode).where(Episode.podcast_id == podcast_id)).all()
        assert len(episodes) == 3
        assert {e.status for e in episodes} == {EpisodeStatus.READY}, [(e.status, e.error) for e in episodes]
        assert all((e.transcript_source or "").startswith("whisper") for e in episodes)
        brief = session.scalar(select(Brief))
        assert brief is not None
        assert len(brief.items) == 5
        # Every item's words are in the mail, with its reason.
        for item in brief.items:
            assert item.why
            assert item.insight.text.split()[0] in text
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
        delivery = session.scalar(select(Delivery))
        assert delivery is not None and delivery.status == DeliveryStatus.SENT
