"""Stage: transcript segments -> candidate insights.

Input rows: TranscriptSegment (start, end, text) of one episode.
Output rows: Insight (idx, start, end, text, substance), episode.status = extracted.
Idempotency: if the episode already has Insight rows, nothing is written and their count is returned.

The cutting itself (sentences, sponsor reads, banter, questions, fragments, substance) is app.text.passages;
this module only reads and writes rows.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Episode, EpisodeStatus, Insight, TranscriptSegment
from app.text.passages import extract_passages
from app.text.sentences import TimedText

# Statuses after which extraction must not move the episode backwards.
_LATER = {EpisodeStatus.EXTRACTED, EpisodeStatus.READY}


def extract(session: Session, episode_id: int) -> int:
    """Write the episode's candidate insights; returns how many it has."""
    existing = session.scalar(select(func.count()).select_from(Insight).where(Insight.episode_id == episode_id))
    episode = session.get(Episode, episode_id)
    if episode is None:
        raise LookupError(f"episode {episode_id} does not exist")
    if existing:
        return int(existing)
    segments = session.scalars(
        select(TranscriptSegment).where(TranscriptSegment.episode_id == episode_id).order_by(TranscriptSegment.idx)
    ).all()
    passages = extract_passages([TimedText(float(s.start), float(s.end), s.text) for s in segments])
    for idx, p in enumerate(passages):
        session.add(
            Insight(episode_id=episode_id, idx=idx, start=p.start, end=p.end, text=p.text, substance=p.substance)
        )
    if episode.status not in _LATER:
        episode.status = EpisodeStatus.EXTRACTED
    session.flush()
    return len(passages)
