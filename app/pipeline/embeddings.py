"""Stage: candidate insights -> embedded insights (eligible for briefs).

Input rows: Insight rows of one episode without an embedding.
Output rows: Insight.embedding (float32 little-endian bytes, L2-normalised) + Insight.embedding_model;
episode.status = ready.
Idempotency: insights that already carry an embedding of the current model are not re-encoded; the episode's
insight count is returned either way.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ml import encoder
from app.models import Episode, EpisodeStatus, Insight


def embed_episode(session: Session, episode_id: int) -> int:
    episode = session.get(Episode, episode_id)
    if episode is None:
        raise LookupError(f"episode {episode_id} does not exist")
    rows = session.scalars(select(Insight).where(Insight.episode_id == episode_id).order_by(Insight.idx)).all()
    name = encoder.model_name()
    todo = [r for r in rows if r.embedding is None or r.embedding_model != name]
    if todo:
        vecs = encoder.encode([r.text for r in todo])  # one batched call per episode
        for row, vec in zip(todo, vecs, strict=True):
            row.embedding = encoder.to_blob(vec)
            row.embedding_model = name
    if episode.status != EpisodeStatus.READY:
        episode.status = EpisodeStatus.READY
    session.flush()
    return len(rows)
