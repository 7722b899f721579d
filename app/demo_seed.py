"""Seed the demo podcast and a confirmed demo user whose delivery hour is now, so a brief arrives soon."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.demo import DEMO_INTERESTS, FEED_PATH
from app.models import Podcast, Subscription, User, utcnow


def seed_demo(email: str | None = None) -> tuple[int, int]:
    settings = get_settings()
    email = (email or settings.demo_email).lower()
    feed_url = settings.base_url.rstrip("/") + FEED_PATH
    now = utcnow()
    with session_scope() as session:
        podcast = session.scalar(select(Podcast).where(Podcast.feed_url == feed_url))
        if podcast is None:
            podcast = Podcast(feed_url=feed_url, title="Signal and Noise (podbrief demo)", next_check_at=now)
            session.add(podcast)
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(
                email=email,
                interests=DEMO_INTERESTS,
                timezone="UTC",
                # The hour that is now: the demo brief is due as soon as the demo episodes are processed.
                delivery_hour=now.hour,
                confirmed_at=now,
                token=secrets.token_urlsafe(24),
            )
            session.add(user)
        session.flush()
        if session.scalar(
            select(Subscription).where(Subscription.user_id == user.id, Subscription.podcast_id == podcast.id)
        ) is None:
            session.add(Subscription(user_id=user.id, podcast_id=podcast.id))
        return podcast.id, user.id
