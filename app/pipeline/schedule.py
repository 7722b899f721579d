"""What is due and what is stuck: the database is the schedule.

Input rows: users, briefs, episodes. Output rows: none except bookkeeping (User.last_skip_at, Episode.updated_at
touched when re-dispatched, Episode.status=failed after too many attempts). Idempotent: pure queries plus
monotonic bookkeeping; running it twice enqueues at most duplicate ids, which every stage tolerates.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Brief, Episode, EpisodeStatus, Podcast, User, utcnow

# Which task moves an episode on from each status. READY and FAILED are terminal.
NEXT_STEP: dict[str, str] = {
    EpisodeStatus.NEW: "fetch",  # download audio, or fetch the publisher transcript
    EpisodeStatus.DOWNLOADED: "transcribe",
    EpisodeStatus.TRANSCRIBED: "extract",
    EpisodeStatus.EXTRACTED: "embed",
}


def local_now(now: dt.datetime, tz_name: str) -> dt.datetime:
    """`now` in the user's zone; a bad stored zone falls back to UTC rather than failing."""
    try:
        return now.astimezone(ZoneInfo(tz_name))
    except (ZoneInfoNotFoundError, ValueError, KeyError):
        return now.astimezone(dt.UTC)


def local_date(tz_name: str, now: dt.datetime | None = None) -> dt.date:
    """The user's current local date: the date a brief is for (one per user per local date)."""
    return local_now(now or utcnow(), tz_name).date()


def due_briefs(session: Session, now: dt.datetime | None = None) -> list[tuple[int, dt.date]]:
    """Active users whose local delivery hour has come today and who have no brief for their local date.

    "Has come" is local hour >= delivery hour, so a user is still served later the same day if the worker was
    down at the exact hour, and DST gaps (02:00 that never happens) can't skip a day. One query per distinct
    timezone, not per user.
    """
    now = now or utcnow()
    settings = get_settings()
    retry_before = now - dt.timedelta(minutes=settings.skip_retry_minutes)
    # A user skipped earlier today (nothing new qualified) is tried again once new episodes became ready
    # since the skip, or after skip_retry_minutes in any case.
    new_since_skip = exists().where(Episode.status == EpisodeStatus.READY, Episode.updated_at > User.last_skip_at)
    active = and_(
        User.confirmed_at.is_not(None),
        User.paused.is_(False),
        User.unsubscribed_at.is_(None),
        or_(User.last_skip_at.is_(None), User.last_skip_at < retry_before, new_since_skip),
    )
    zones = session.scalars(select(User.timezone).where(active).distinct()).all()
    due: list[tuple[int, dt.date]] = []
    for tz_name in zones:
        local = local_now(now, tz_name)
        local_date = local.date()
        has_brief = exists().where(Brief.user_id == User.id, Brief.local_date == local_date)
        rows = session.scalars(
            select(User.id)
            .where(active, User.timezone == tz_name, User.delivery_hour <= local.hour, ~has_brief)
            .order_by(User.id)
        ).all()
        due.extend((uid, local_date) for uid in rows)
    return due


def record_skip(session: Session, user_id: int, now: dt.datetime | None = None) -> None:
    """Remember that a due brief was skipped, so beat waits before trying that user again."""
    user = session.get(User, user_id)
    if user is not None:
        user.last_skip_at = now or utcnow()


def is_recent(episode: Episode, now: dt.datetime | None = None) -> bool:
    """Episodes older than ingest_max_age_days are catalogued but never processed."""
    if episode.published_at is None:
        return True
    now = now or utcnow()
    return episode.published_at >= now - dt.timedelta(days=get_settings().ingest_max_age_days)


def next_step(episode: Episode, now: dt.datetime | None = None) -> str | None:
    if not is_recent(episode, now):
        return None
    return NEXT_STEP.get(episode.status)


def stalled_episodes(session: Session, now: dt.datetime | None = None, limit: int = 200) -> list[int]:
    """Episodes that stopped mid-pipeline (lost message, killed worker) and hold no live lease.

    Their updated_at is touched so the next reconcile pass doesn't pick them again straight away; an episode
    that keeps stalling fails after max_attempts.
    """
    now = now or utcnow()
    settings = get_settings()
    cutoff = now - dt.timedelta(seconds=settings.stall_after_seconds)
    recent = now - dt.timedelta(days=settings.ingest_max_age_days)
    episodes = session.scalars(
        select(Episode)
        .where(
            Episode.status.in_(list(NEXT_STEP)),
            Episode.updated_at < cutoff,
            or_(Episode.lease_until.is_(None), Episode.lease_until < now),
            or_(Episode.published_at.is_(None), Episode.published_at >= recent),
        )
        .order_by(Episode.id)
        .limit(limit)
    ).all()
    ids: list[int] = []
    for ep in episodes:
        ep.attempts += 1
        ep.updated_at = now
        if ep.attempts > settings.max_attempts:
            stalled_at = ep.status
            ep.status = EpisodeStatus.FAILED
            gave_up = f"gave up after {settings.max_attempts} attempts (stalled at {stalled_at})"
            ep.error = f"{gave_up}; earlier: {ep.error}"[:2000] if ep.error else gave_up
            continue
        ids.append(ep.id)
    return ids


def mark_failed(session: Session, episode_id: int, reason: str) -> None:
    """A permanent error: the episode stops here with a readable reason."""
    ep = session.get(Episode, episode_id)
    if ep is not None:
        ep.status = EpisodeStatus.FAILED
        ep.error = reason[:2000]
        ep.lease_owner = None
        ep.lease_until = None


def hold_podcasts(session: Session, podcast_ids: list[int], until: dt.datetime) -> None:
    """Push due podcasts' next check forward while their poll is queued (poll() sets the real next time),
    so the next beat tick doesn't enqueue the same podcast again."""
    if not podcast_ids:
        return
    for podcast in session.scalars(select(Podcast).where(Podcast.id.in_(podcast_ids))):
        podcast.next_check_at = until
