"""Who is due for a brief, in their own timezone; what counts as stuck mid-pipeline."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from sqlalchemy.orm import Session

from app.models import Brief, Episode, EpisodeStatus, Podcast, User
from app.pipeline import schedule

UTC = dt.UTC


def _user(session: Session, email: str, tz: str, hour: int, **kw: object) -> User:
    user = User(
        email=email,
        interests="anything",
        timezone=tz,
        delivery_hour=hour,
        confirmed_at=dt.datetime(2026, 1, 1, tzinfo=UTC),
        token=secrets.token_urlsafe(16),
        **kw,
    )
    session.add(user)
    session.flush()
    return user


@pytest.mark.pg
def test_due_when_local_hour_has_come(session: Session) -> None:
    tokyo = _user(session, "tokyo@example.com", "Asia/Tokyo", 7)
    ny = _user(session, "ny@example.com", "America/New_York", 20)
    # 2026-03-10 22:30 UTC = 07:30 in Tokyo (next day), 18:30 in New York.
    now = dt.datetime(2026, 3, 10, 22, 30, tzinfo=UTC)
    due = schedule.due_briefs(session, now)
    assert (tokyo.id, dt.date(2026, 3, 11)) in due
    assert all(uid != ny.id for uid, _ in due)


@pytest.mark.pg
def test_half_hour_offset(session: Session) -> None:
    india = _user(session, "in@example.com", "Asia/Kolkata", 8)  # UTC+05:30
    before = dt.datetime(2026, 6, 1, 2, 29, tzinfo=UTC)  # 07:59 local
    after = dt.datetime(2026, 6, 1, 2, 30, tzinfo=UTC)  # 08:00 local
    assert schedule.due_briefs(session, before) == []
    assert schedule.due_briefs(session, after) == [(india.id, dt.date(2026, 6, 1))]


@pytest.mark.pg
def test_dst_gap_does_not_skip_a_day(session: Session) -> None:
    # Europe/Berlin springs forward on 2026-03-29: 02:00 local never happens.
    user = _user(session, "berlin@example.com", "Europe/Berlin", 2)
    now = dt.datetime(2026, 3, 29, 1, 5, tzinfo=UTC)  # 03:05 CEST
    assert schedule.due_briefs(session, now) == [(user.id, dt.date(2026, 3, 29))]


@pytest.mark.pg
def test_dst_fall_back_sends_once(session: Session) -> None:
    # America/New_York falls back on 2026-11-01: 01:00-02:00 local happens twice.
    user = _user(session, "ny2@example.com", "America/New_York", 1)
    first = dt.datetime(2026, 11, 1, 5, 10, tzinfo=UTC)  # 01:10 EDT
    assert schedule.due_briefs(session, first) == [(user.id, dt.date(2026, 11, 1))]
    session.add(Brief(user_id=user.id, local_date=dt.date(2026, 11, 1)))
    session.flush()
    second = dt.datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST, the same local date
    assert schedule.due_briefs(session, second) == []


@pytest.mark.pg
def test_inactive_users_are_never_due(session: Session) -> None:
    now = dt.datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    _user(session, "paused@example.com", "UTC", 0, paused=True)
    _user(session, "gone@example.com", "UTC", 0, unsubscribed_at=now)
    unconfirmed = _user(session, "new@example.com", "UTC", 0)
    unconfirmed.confirmed_at = None
    session.flush()
    assert schedule.due_briefs(session, now) == []


@pytest.mark.pg
def test_skipped_brief_waits_before_retry(session: Session) -> None:
    now = dt.datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    user = _user(session, "skip@example.com", "UTC", 9)
    schedule.record_skip(session, user.id, now)
    session.flush()
    assert schedule.due_briefs(session, now + dt.timedelta(minutes=5)) == []
    assert schedule.due_briefs(session, now + dt.timedelta(minutes=31)) == [(user.id, dt.date(2026, 5, 5))]


def test_unknown_timezone_falls_back_to_utc() -> None:
    now = dt.datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    assert schedule.local_now(now, "Mars/Olympus_Mons").utcoffset() == dt.timedelta(0)


@pytest.mark.pg
def test_stalled_episodes_are_redispatched_then_failed(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime.now(UTC)
    podcast = Podcast(feed_url="https://example.com/feed.xml", title="t")
    session.add(podcast)
    session.flush()
    old = now - dt.timedelta(hours=1)
    stuck = Episode(podcast_id=podcast.id, guid="a", status=EpisodeStatus.DOWNLOADED, published_at=now,
                    updated_at=old)
    leased = Episode(podcast_id=podcast.id, guid="b", status=EpisodeStatus.DOWNLOADED, published_at=now,
                     updated_at=old, lease_owner="w1", lease_until=now + dt.timedelta(minutes=30))
    ancient = Episode(podcast_id=podcast.id, guid="c", status=EpisodeStatus.NEW,
                      published_at=now - dt.timedelta(days=400), updated_at=old)
    done = Episode(podcast_id=podcast.id, guid="d", status=EpisodeStatus.READY, published_at=now, updated_at=old)
    session.add_all([stuck, leased, ancient, done])
    session.flush()

    assert schedule.stalled_episodes(session, now) == [stuck.id]
    # Touched: not picked again straight away.
    assert schedule.stalled_episodes(session, now) == []

    monkeypatch.setenv("PODBRIEF_MAX_ATTEMPTS", "1")
    from app import config

    config.reset_settings()
    later = now + dt.timedelta(hours=1)
    # The lease of `leased` has expired by now, so it is taken over; `stuck` has used its one attempt.
    assert schedule.stalled_episodes(session, later) == [leased.id]
    assert stuck.status == EpisodeStatus.FAILED
    assert "stalled at downloaded" in (stuck.error or "")


def test_next_step_skips_back_catalogue() -> None:
    now = dt.datetime(2026, 5, 5, tzinfo=UTC)
    fresh = Episode(status=EpisodeStatus.NEW, published_at=now - dt.timedelta(days=1))
    old = Episode(status=EpisodeStatus.NEW, published_at=now - dt.timedelta(days=100))
    assert schedule.next_step(fresh, now) == "fetch"
    assert schedule.next_step(old, now) is None
    assert schedule.next_step(Episode(status=EpisodeStatus.READY, published_at=now), now) is None


@pytest.mark.pg
def test_skipped_user_is_due_again_when_new_content_is_ready(session: Session) -> None:
    now = dt.datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    user = _user(session, "early@example.com", "UTC", 9)
    schedule.record_skip(session, user.id, now)
    podcast = Podcast(feed_url="https://example.com/f.xml", title="t")
    session.add(podcast)
    session.flush()
    episode = Episode(podcast_id=podcast.id, guid="x", status=EpisodeStatus.EXTRACTED, published_at=now,
                      updated_at=now + dt.timedelta(minutes=2))
    session.add(episode)
    session.flush()
    assert schedule.due_briefs(session, now + dt.timedelta(minutes=3)) == []
    episode.status = EpisodeStatus.READY
    session.flush()
    assert schedule.due_briefs(session, now + dt.timedelta(minutes=3)) == [(user.id, dt.date(2026, 5, 5))]
