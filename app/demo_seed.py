"""Seed the demo podcast and a confirmed demo user whose delivery hour is now, so a brief arrives soon.

`podbrief run` seeds the podcast at start and the user once the demo episodes are processed (a brief goes out
as soon as its user is due, and a brief of one episode would be a poor first impression). `podbrief seed-demo`
does both at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.demo import DEMO_INTERESTS, EPISODES, FEED_PATH
from app.models import Episode, EpisodeStatus, Podcast, Subscription, User, utcnow

log = logging.getLogger(__name__)


def demo_feed_url() -> str:
    return get_settings().base_url.rstrip("/") + FEED_PATH


def seed_demo_podcast() -> int:
    feed_url = demo_feed_url()
    with session_scope() as session:
        podcast = session.scalar(select(Podcast).where(Podcast.feed_url == feed_url))
        if podcast is None:
            podcast = Podcast(feed_url=feed_url, title="Signal and Noise (podbrief demo)", next_check_at=utcnow())
            session.add(podcast)
            session.flush()
        return podcast.id


def seed_demo_user(podcast_id: int, email: str | None = None) -> int:
    settings = get_settings()
    email = (email or settings.demo_email).lower()
    now = utcnow()
    with session_scope() as session:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(
                email=email,
                interests=DEMO_INTERESTS,
                timezone="UTC",
                # The hour that is now: the demo brief is due at once.
                delivery_hour=now.hour,
                confirmed_at=now,
                token=secrets.token_urlsafe(24),
            )
            session.add(user)
            session.flush()
        follows = select(Subscription).where(Subscription.user_id == user.id, Subscription.podcast_id == podcast_id)
        if session.scalar(follows) is None:
            session.add(Subscription(user_id=user.id, podcast_id=podcast_id))
        return user.id


def seed_demo(email: str | None = None) -> tuple[int, int]:
    podcast_id = seed_demo_podcast()
    return podcast_id, seed_demo_user(podcast_id, email)


def demo_episodes_settled(podcast_id: int) -> bool:
    """All demo episodes are known and each is ready (or failed: waiting longer would not help)."""
    with session_scope() as session:
        statuses = session.scalars(select(Episode.status).where(Episode.podcast_id == podcast_id)).all()
    done = {EpisodeStatus.READY, EpisodeStatus.FAILED}
    return len(statuses) >= len(EPISODES) and all(s in done for s in statuses)


def seed_user_when_ready(podcast_id: int, *, timeout: float = 900.0, interval: float = 2.0) -> threading.Thread:
    """In the background: wait for the demo episodes to be processed, then add the demo user."""

    def wait_then_seed() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not demo_episodes_settled(podcast_id):
            time.sleep(interval)
        user_id = seed_demo_user(podcast_id)
        log.info("demo user %s (id %s) added; the demo brief follows within a minute", get_settings().demo_email,
                 user_id)

    thread = threading.Thread(target=wait_then_seed, name="demo-seed", daemon=True)
    thread.start()
    return thread
