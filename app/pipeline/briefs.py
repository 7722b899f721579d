"""Stage: ready insights + one user -> that user's brief for one local date.

Input rows: User (interests), Subscription, Feedback, earlier Brief/BriefItem rows, READY Episode + Insight rows.
Output rows: Brief + BriefItem (settings.brief_size at most); or none, with User.last_skip_reason/last_skip_at.
Idempotency: one brief per (user, local_date), enforced by a unique constraint; if it exists (or a concurrent
worker wins the race) its id is returned.

Candidates are the insights of episodes that are new since the user's last brief (published, or first seen by
us, after it: an episode published earlier but processed late still counts), or for a first brief those of the
last settings.first_brief_lookback_days days. Insights the user already got are excluded by ranking's novelty
check, so the window may overlap without repeating anything.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.ml import encoder
from app.models import Brief, BriefItem, Episode, EpisodeStatus, Feedback, Insight, Subscription, User
from app.pipeline.ranking import Catalogue, Item, Profile, interest_phrases, rank_users

log = logging.getLogger(__name__)
PAST_ITEMS = 500  # how many earlier brief items the novelty check compares with
FEEDBACK_ROWS = 200


def _vecs(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, encoder.DIM), dtype=np.float32)
    return np.stack([encoder.from_blob(b) for b in blobs]).astype(np.float32)


def load_catalogue(session: Session, since: dt.datetime, now: dt.datetime) -> Catalogue:
    """READY insights of episodes published or first seen after `since` (and not after `now`)."""
    published = func.coalesce(Episode.published_at, Episode.created_at)
    rows = session.execute(
        select(
            Insight.id,
            Insight.embedding,
            Insight.substance,
            Insight.start,
            Insight.end,
            Episode.id,
            Episode.podcast_id,
            published,
        )
        .join(Episode, Insight.episode_id == Episode.id)
        .where(
            Episode.status == EpisodeStatus.READY,
            Insight.embedding.is_not(None),
            Insight.embedding_model == encoder.model_name(),
            or_(published > since, Episode.created_at > since),
            published <= now,
        )
        .order_by(Insight.id)
    ).all()

    def age(t: dt.datetime | None) -> float:
        if t is None:
            return 0.0
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return max(0.0, (now - t).total_seconds() / 86400.0)

    return Catalogue(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        vecs=_vecs([r[1] or b"" for r in rows]),  # never empty: the query requires an embedding
        episode=np.array([r[5] for r in rows], dtype=np.int64),
        podcast=np.array([r[6] for r in rows], dtype=np.int64),
        substance=np.array([r[2] for r in rows], dtype=np.float32),
        age_days=np.array([age(r[7]) for r in rows], dtype=np.float32),
        start=np.array([r[3] for r in rows], dtype=np.float32),
        end=np.array([r[4] for r in rows], dtype=np.float32),
    )


def load_profile(session: Session, user: User) -> Profile:
    phrases = interest_phrases(user.interests)
    followed = frozenset(session.scalars(select(Subscription.podcast_id).where(Subscription.user_id == user.id)).all())
    fb = session.execute(
        select(Feedback.kind, Insight.embedding, Episode.podcast_id)
        .join(Insight, Feedback.insight_id == Insight.id)
        .join(Episode, Insight.episode_id == Episode.id)
        .where(Feedback.user_id == user.id)
        .order_by(Feedback.created_at.desc())
        .limit(FEEDBACK_ROWS)
    ).all()
    past = session.execute(
        select(BriefItem.insight_id, Insight.embedding)
        .join(Brief, BriefItem.brief_id == Brief.id)
        .join(Insight, BriefItem.insight_id == Insight.id)
        .where(Brief.user_id == user.id)
        .order_by(Brief.local_date.desc())
        .limit(PAST_ITEMS)
    ).all()
    return Profile(
        phrases=phrases,
        phrase_vecs=encoder.encode(phrases) if phrases else np.zeros((0, encoder.DIM), dtype=np.float32),
        followed=followed,
        less_shows=frozenset(p for kind, _, p in fb if kind == "less_show"),
        more_vecs=_vecs([e for kind, e, _ in fb if kind == "more" and e is not None]),
        less_vecs=_vecs([e for kind, e, _ in fb if kind == "less" and e is not None]),
        past_vecs=_vecs([e for _, e in past if e is not None]),
        past_ids=frozenset(i for i, _ in past),
    )


def _existing(session: Session, user_id: int, local_date: dt.date) -> int | None:
    return session.scalar(select(Brief.id).where(Brief.user_id == user_id, Brief.local_date == local_date))


def _skip(user: User, reason: str, now: dt.datetime) -> None:
    user.last_skip_reason = reason
    user.last_skip_at = now


def build(session: Session, user_id: int, local_date: dt.date, *, now: dt.datetime) -> int | None:
    """The id of the user's brief for local_date (built now if needed), or None when nothing qualifies."""
    existing = _existing(session, user_id, local_date)
    if existing is not None:
        return existing
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    settings = get_settings()
    # Only earlier dates' briefs set the window (a concurrent brief for this very date is handled below).
    last = session.scalar(
        select(func.max(Brief.created_at)).where(Brief.user_id == user_id, Brief.local_date < local_date)
    )
    since = last if last is not None else now - dt.timedelta(days=settings.first_brief_lookback_days)
    catalogue = load_catalogue(session, since, now)
    if len(catalogue) == 0:
        _skip(user, "no new insights since the last brief", now)
        session.flush()
        return None
    profile = load_profile(session, user)
    if not profile.phrases:
        _skip(user, "no interests set", now)
        session.flush()
        return None
    items: list[Item] = rank_users(catalogue, [profile], k=settings.brief_size)[0]
    if not items:
        _skip(user, "no new insight matched your interests", now)
        session.flush()
        return None
    try:
        # A savepoint: losing the (user, local_date) race rolls back only our insert, not the caller's work.
        with session.begin_nested():
            brief = Brief(user_id=user_id, local_date=local_date, created_at=now)
            session.add(brief)
            session.flush()
            for pos, item in enumerate(items):
                session.add(
                    BriefItem(
                        brief_id=brief.id,
                        insight_id=item.insight_id,
                        position=pos,
                        score=item.score,
                        why=item.why,
                        shows_count=item.shows_count,
                    )
                )
            session.flush()
    except IntegrityError:
        winner = _existing(session, user_id, local_date)
        if winner is None:
            raise
        return winner
    user.last_skip_reason = None
    return int(brief.id)
