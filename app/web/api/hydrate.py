"""Turn insight ids into response models with one query (no per-row lazy loads)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Episode, Insight, Podcast
from app.web.api.schemas import InsightOut


def insights_by_id(session: Session, ids: Iterable[int]) -> dict[int, InsightOut]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(
            Insight.id,
            Insight.episode_id,
            Episode.podcast_id,
            Insight.text,
            Insight.start,
            Insight.end,
            Insight.substance,
            Episode.title,
            Podcast.title,
            Episode.published_at,
            Insight.created_at,
        )
        .join(Episode, Episode.id == Insight.episode_id)
        .join(Podcast, Podcast.id == Episode.podcast_id)
        .where(Insight.id.in_(wanted))
    ).all()
    return {
        r[0]: InsightOut(
            id=r[0],
            episode_id=r[1],
            podcast_id=r[2],
            text=r[3],
            start=r[4],
            end=r[5],
            substance=r[6] or 0.0,
            episode_title=r[7] or "",
            podcast_title=r[8] or "",
            published_at=r[9],
            created_at=r[10],
        )
        for r in rows
    }


def ordered(session: Session, scored: list[tuple[int, float]]) -> list[InsightOut]:
    """Models for (id, score) pairs in that order; ids deleted since indexing are skipped."""
    found = insights_by_id(session, (i for i, _ in scored))
    out = []
    for iid, score in scored:
        model = found.get(iid)
        if model is not None:
            out.append(model.model_copy(update={"score": round(score, 6)}))
    return out
