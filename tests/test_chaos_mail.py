"""Exactly once under crashes: a real worker is SIGKILLed in the middle of a batch of sends, restarted (with
beat reconciling), and the SMTP server's received messages are counted: every user got exactly one brief."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from app import config
from app.db import session_scope
from app.models import Brief, BriefItem, Delivery, DeliveryStatus, Episode, EpisodeStatus, Insight, Podcast, User
from app.pipeline import mail
from app.smtp_sink import EmlWriter
from tests import procs
from tests.test_integration_pipeline import free_port

pytestmark = [pytest.mark.integration]

N_USERS = 24


class SlowWriter(EmlWriter):
    """The real sink, slowed down so a batch of sends takes long enough to be interrupted."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.35)
        result: str = await super().handle_DATA(server, session, envelope)
        return result


def seed_briefs(n_users: int) -> list[int]:
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        podcast = Podcast(feed_url="https://shows.example.com/feed.xml", title="Example Show")
        session.add(podcast)
        session.flush()
        insights = []
        for e in range(3):
            ep = Episode(podcast_id=podcast.id, guid=f"ep{e}", title=f"Episode {e}", status=EpisodeStatus.READY,
                         enclosure_url=f"https://shows.example.com/{e}.mp3", published_at=now)
            session.add(ep)
            session.flush()
            for i in range(5):
                ins = Insight(episode_id=ep.id, idx=i, start=10.0 * i, end=10.0 * i + 8,
                              text=f"Claim {e}.{i}: a specific finding with a number, {i * 7} percent.")
                session.add(ins)
                insights.append(ins)
        session.flush()
        delivery_ids = []
        for u in range(n_users):
            user = User(email=f"user{u}@example.com", interests="science", timezone="UTC", delivery_hour=0,
                        confirmed_at=now, token=secrets.token_urlsafe(16))
            session.add(user)
            session.flush()
            brief = Brief(user_id=user.id, local_date=now.date())
            session.add(brief)
            session.flush()
            for pos in range(5):
                session.add(BriefItem(brief_id=brief.id, insight_id=insights[(u + pos) % len(insights)].id,
                                      position=pos, why="matches: science"))
            session.flush()
            delivery_ids.append(mail.ensure_delivery(session, brief.id))
    return delivery_ids


def received_by_recipient(mail_dir: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in mail_dir.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        counts[str(msg["To"])] += 1
    return counts


@pytest.mark.pg
def test_sigkill_mid_batch_sends_each_brief_exactly_once(
    db_url: str, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.celery_app import make_celery

    backend = "postgres" if db_url.startswith("postgresql") else "sqlite"
    delivery_ids = seed_briefs(N_USERS)
    mail_dir = env / "mail"
    port = free_port()
    controller = Controller(SlowWriter(mail_dir), hostname="127.0.0.1", port=port)
    controller.start()
    extra = {
        "DATABASE_URL": db_url,
        "PODBRIEF_VAR_DIR": str(env),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        # The sink's mail_dir is the evidence reconcile uses to tell "accepted" from "lost".
        "PODBRIEF_SMTP_SINK": "1",
        "PODBRIEF_MAIL_SENDING_TIMEOUT_SECONDS": "3",
        "PODBRIEF_MAIL_PENDING_GRACE_SECONDS": "3",
        "PODBRIEF_BEAT_RECONCILE_SECONDS": "2",
        "PODBRIEF_BEAT_FEEDS_SECONDS": "3600",
        "PODBRIEF_BEAT_BRIEFS_SECONDS": "3600",
    }
    if backend == "postgres":
        import os

        import redis

        redis_url = os.environ.get("PODBRIEF_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        redis.Redis.from_url(redis_url).flushdb()
        extra["REDIS_URL"] = redis_url
    child_env = procs.child_env(extra)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    config.reset_settings()
    producer = make_celery()
    logs = tmp_path / "logs"
    logs.mkdir()

    first = procs.worker(child_env, logs, name="worker1")
    try:
        for delivery_id in delivery_ids:
            producer.send_task("podbrief.send_delivery", args=[delivery_id], queue="mail")
        procs.wait_for(lambda: len(list(mail_dir.glob("*.eml"))) >= N_USERS // 3, 180, "a third of the batch",
                       [first])
    finally:
        first.kill()  # SIGKILL, the whole process group: no warm shutdown, no acks
    sent_before_restart = len(list(mail_dir.glob("*.eml")))
    assert sent_before_restart < N_USERS, "the kill came too late to interrupt the batch"

    second = procs.worker(child_env, logs, name="worker2")
    beat = procs.beat(child_env, logs)
    try:
        def all_sent() -> bool:
            with session_scope() as session:
                n = session.scalar(select(func.count()).select_from(Delivery)
                                   .where(Delivery.status == DeliveryStatus.SENT))
                return n == N_USERS

        procs.wait_for(all_sent, 240, "every delivery sent", [second, beat])
    finally:
        beat.stop()
        second.stop()
        controller.stop()

    counts = received_by_recipient(mail_dir)
    assert len(counts) == N_USERS
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
