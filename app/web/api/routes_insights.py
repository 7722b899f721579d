"""/api/v1/insights: the catalogue's insights, filtered or ranked by meaning, one with its related ones, feedback.

Insights, episodes and podcasts with episodes form the shared catalogue every user's brief draws on
(design.md), so any authenticated caller may read them; what is per-user (feedback) is written for the caller.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db import session_scope
from app.models import Episode, Feedback, Insight
from app.web.api.deps import ApiState, CallerDep, SessionDep, StateDep
from app.web.api.http import (
    AUTH_ERRORS,
    BAD_BODY,
    BAD_CURSOR,
    NOT_FOUND,
    NOT_MODIFIED,
    cached_json,
    encode_cursor,
    int_cursor,
    model_json,
    plain_json,
)
from app.web.api.hydrate import insights_by_id, ordered
from app.web.api.schemas import FeedbackIn, FeedbackOut, InsightDetail, InsightOut, IsoDate, Page
from app.web.api.search import Filters

MAX_ID = 2**63 - 1
router = APIRouter(prefix="/insights", tags=["insights"])
OptId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@router.get(
    "",
    response_model=Page[InsightOut],
    summary="List insights, newest first, or rank them by meaning with ?q=",
    responses={**AUTH_ERRORS, **BAD_CURSOR, **NOT_MODIFIED},
)
async def list_insights(
    request: Request,
    caller: CallerDep,
    state: StateDep,
    podcast_id: OptId = None,
    episode_id: OptId = None,
    since: Annotated[IsoDate | None, Query(description="Published on or after this day (UTC)")] = None,
    until: Annotated[IsoDate | None, Query(description="Published on or before this day (UTC)")] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=500, description="Semantic search: ranked by similarity")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    filters = Filters(podcast_id=podcast_id, episode_id=episode_id, since=since, until=until)
    if q is not None and q.strip():
        return await _search(request, state, q, filters, limit, cursor)
    before = int_cursor(cursor, "i")
    return await run_in_threadpool(_list, request, filters, limit, before)


def _list(request: Request, filters: Filters, limit: int, before: int | None) -> Response:
    with session_scope() as session:
        return _list_in(session, request, filters, limit, before)


def _list_in(session: Session, request: Request, filters: Filters, limit: int, before: int | None) -> Response:
    podcast_id, episode_id, since, until = filters.podcast_id, filters.episode_id, filters.since, filters.until
    stmt = select(Insight.id).join(Episode, Episode.id == Insight.episode_id)
    if before is not None:
        stmt = stmt.where(Insight.id < before)
    if podcast_id is not None:
        stmt = stmt.where(Episode.podcast_id == podcast_id)
    if episode_id is not None:
        stmt = stmt.where(Insight.episode_id == episode_id)
    published = func.coalesce(Episode.published_at, Insight.created_at)
    if since is not None:
        stmt = stmt.where(published >= dt.datetime.combine(since, dt.time.min, dt.UTC))
    if until is not None:
        stmt = stmt.where(published <= dt.datetime.combine(until, dt.time.max, dt.UTC))
    ids = list(session.scalars(stmt.order_by(Insight.id.desc()).limit(limit + 1)))
    more = len(ids) > limit
    ids = ids[:limit]
    found = insights_by_id(session, ids)
    items = [found[i] for i in ids if i in found]
    next_cursor = encode_cursor("i", ids[-1]) if more else None
    return model_json(request, Page[InsightOut](items=items, next_cursor=next_cursor))


async def _search(
    request: Request, state: ApiState, q: str, filters: Filters, limit: int, cursor: str | None
) -> Response:
    """Anything that can take long (loading new rows, running the model, the matmul, SQL) runs in a thread;
    a repeated query over an unchanged index is answered from cached bytes on the event loop."""
    offset = int_cursor(cursor, "s") or 0
    if state.index.refresh_due():
        await run_in_threadpool(_refresh, state)
    # Same query, filters and page over the same index version -> same bytes: skip model, matmul and SQL.
    key = (state.queries.normalise(q), filters, limit, offset, state.index.version)
    body = state.searches.get(key)
    if body is None:
        body = await run_in_threadpool(_search_page, state, q, filters, limit, offset)
        state.searches.put(key, body)
    return cached_json(request, body)


def _refresh(state: ApiState) -> None:
    with session_scope() as session:
        state.index.refresh(session)


def _search_page(state: ApiState, q: str, filters: Filters, limit: int, offset: int) -> bytes:
    cap = state.settings.search_max_results
    want = min(offset + limit + 1, cap)
    scored = state.index.search(state.queries.vector(q), k=want, filters=filters) if offset < cap else []
    page = scored[offset : offset + limit]
    more = len(scored) > offset + limit and offset + limit < cap
    next_cursor = encode_cursor("s", offset + limit) if more else None
    with session_scope() as session:
        items = ordered(session, page)
    return Page[InsightOut](items=items, next_cursor=next_cursor).model_dump_json().encode()


@router.get(
    "/{insight_id}",
    response_model=InsightDetail,
    summary="One insight with the insights most similar to it",
    responses={**AUTH_ERRORS, **NOT_FOUND, **NOT_MODIFIED},
)
def get_insight(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    state: StateDep,
    insight_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> Response:
    found = insights_by_id(session, [insight_id]).get(insight_id)
    if found is None:
        raise HTTPException(404, "No such insight.")
    state.index.refresh(session)
    vec = state.index.vector_of(insight_id)
    related = []
    if vec is not None:
        related = ordered(session, state.index.search(vec, k=state.settings.related_count, exclude=insight_id))
    return model_json(request, InsightDetail(**found.model_dump(), related=related))


@router.post(
    "/{insight_id}/feedback",
    status_code=201,
    response_model=FeedbackOut,
    summary="Tell the ranking: more like this, less like this, or less of this show",
    responses={**AUTH_ERRORS, **BAD_BODY, **NOT_FOUND},
)
def post_feedback(
    session: SessionDep, caller: CallerDep, insight_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: FeedbackIn
) -> Response:
    if session.get(Insight, insight_id) is None:
        raise HTTPException(404, "No such insight.")
    row = Feedback(user_id=caller.user_id, insight_id=insight_id, kind=body.kind)
    session.add(row)
    session.flush()
    out = FeedbackOut(id=row.id, insight_id=insight_id, kind=row.kind, created_at=row.created_at)
    return plain_json(out, status_code=201)
