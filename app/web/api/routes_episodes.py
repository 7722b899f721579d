"""/api/v1/episodes: catalogue episodes with their transcript (segments and where it came from)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import select

from app.models import Episode, Insight, TranscriptSegment
from app.web.api.deps import CallerDep, SessionDep
from app.web.api.http import AUTH_ERRORS, BAD_CURSOR, NOT_FOUND, NOT_MODIFIED, encode_cursor, int_cursor, model_json
from app.web.api.schemas import EpisodeDetail, EpisodeOut, Page, SegmentOut

MAX_ID = 2**63 - 1
router = APIRouter(prefix="/episodes", tags=["episodes"])


def _out(e: Episode) -> EpisodeOut:
    return EpisodeOut(
        id=e.id,
        podcast_id=e.podcast_id,
        title=e.title or "",
        link=e.link,
        published_at=e.published_at,
        duration_seconds=e.duration_seconds,
        status=e.status,
        transcript_source=e.transcript_source,
        created_at=e.created_at,
    )


@router.get(
    "",
    response_model=Page[EpisodeOut],
    summary="Episodes, newest first",
    responses={**AUTH_ERRORS, **BAD_CURSOR, **NOT_MODIFIED},
)
def list_episodes(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    podcast_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    before = int_cursor(cursor, "e")
    stmt = select(Episode)
    if podcast_id is not None:
        stmt = stmt.where(Episode.podcast_id == podcast_id)
    if before is not None:
        stmt = stmt.where(Episode.id < before)
    rows = list(session.scalars(stmt.order_by(Episode.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    page = Page[EpisodeOut](
        items=[_out(e) for e in rows], next_cursor=encode_cursor("e", rows[-1].id) if more else None
    )
    return model_json(request, page)


@router.get(
    "/{episode_id}",
    response_model=EpisodeDetail,
    summary="One episode with its transcript segments and insight ids",
    responses={**AUTH_ERRORS, **NOT_FOUND, **NOT_MODIFIED},
)
def get_episode(
    request: Request, session: SessionDep, caller: CallerDep, episode_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> Response:
    e = session.get(Episode, episode_id)
    if e is None:
        raise HTTPException(404, "No such episode.")
    segments = session.scalars(
        select(TranscriptSegment).where(TranscriptSegment.episode_id == e.id).order_by(TranscriptSegment.idx)
    )
    insight_ids = session.scalars(select(Insight.id).where(Insight.episode_id == e.id).order_by(Insight.idx))
    detail = EpisodeDetail(
        **_out(e).model_dump(),
        description=e.description or "",
        segments=[SegmentOut(idx=s.idx, start=s.start, end=s.end, text=s.text, speaker=s.speaker) for s in segments],
        insight_ids=list(insight_ids),
    )
    return model_json(request, detail)
