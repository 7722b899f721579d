"""/api/v1/briefs: the caller's own daily briefs (every query is scoped to the caller's user id)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db import session_scope
from app.models import Brief, BriefItem
from app.pipeline import schedule
from app.web.api.deps import ApiState, CallerDep, SessionDep, StateDep
from app.web.api.http import (
    AUTH_ERRORS,
    BAD_CURSOR,
    NOT_FOUND,
    NOT_MODIFIED,
    cached_json,
    decode_cursor,
    encode_cursor,
)
from app.web.api.hydrate import insights_by_id
from app.web.api.schemas import BriefItemOut, BriefOut, IsoDate, Page

router = APIRouter(prefix="/briefs", tags=["briefs"])


def _serialise(session: Session, brief: Brief) -> BriefOut:
    items = list(session.scalars(select(BriefItem).where(BriefItem.brief_id == brief.id).order_by(BriefItem.position)))
    found = insights_by_id(session, [i.insight_id for i in items])
    return BriefOut(
        id=brief.id,
        local_date=brief.local_date,
        created_at=brief.created_at,
        items=[
            BriefItemOut(
                position=i.position, score=i.score, why=i.why, shows_count=i.shows_count, insight=found[i.insight_id]
            )
            for i in items
            if i.insight_id in found
        ],
    )


_briefs = Brief.__table__
# Prebuilt Core statement: the hot path of GET /briefs/today is this read plus cached bytes.
_HEAD = select(_briefs.c.id, _briefs.c.created_at).where(
    _briefs.c.user_id == bindparam("user_id"), _briefs.c.local_date == bindparam("local_date")
)


async def _brief_body(state: ApiState, user_id: int, local_date: dt.date) -> bytes | None:
    """The brief's JSON: one indexed read on the loop, then cached bytes (a thread builds them on a miss)."""
    head = state.reader.first(_HEAD, {"user_id": user_id, "local_date": local_date})
    if head is None:
        return None
    # A built brief never changes (one per user and date), so its bytes are cached under its identity.
    key = (head.id, user_id, local_date, head.created_at)
    body = state.briefs.get(key)
    if body is None:
        body = await run_in_threadpool(_build_body, head.id)
        state.briefs.put(key, body)
    return body


def _build_body(brief_id: int) -> bytes:
    with session_scope() as session:
        brief = session.get(Brief, brief_id)
        if brief is None:  # deleted since the lookup
            raise HTTPException(404, "No such brief.")
        return _serialise(session, brief).model_dump_json().encode()


def local_today(timezone: str, now: dt.datetime | None = None) -> dt.date:
    return schedule.local_date(timezone, now)


@router.get(
    "",
    response_model=Page[BriefOut],
    summary="My briefs, newest first",
    responses={**AUTH_ERRORS, **BAD_CURSOR, **NOT_MODIFIED},
)
def list_briefs(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    before = decode_cursor(cursor, "b")
    stmt = select(Brief).where(Brief.user_id == caller.user_id)
    if before is not None:
        try:
            stmt = stmt.where(Brief.local_date < dt.date.fromisoformat(before))
        except (TypeError, ValueError):
            raise HTTPException(400, "Invalid cursor.") from None
    briefs = list(session.scalars(stmt.order_by(Brief.local_date.desc()).limit(limit + 1)))
    more = len(briefs) > limit
    briefs = briefs[:limit]
    page = Page[BriefOut](
        items=[_serialise(session, b) for b in briefs],
        next_cursor=encode_cursor("b", briefs[-1].local_date.isoformat()) if more else None,
    )
    return cached_json(request, page.model_dump_json().encode())


@router.get(
    "/today",
    response_model=BriefOut,
    summary="My brief for today in my time zone",
    responses={**AUTH_ERRORS, **NOT_FOUND, **NOT_MODIFIED},
)
async def today(request: Request, caller: CallerDep, state: StateDep) -> Response:
    # async: two indexed reads and, usually, cached bytes; a thread hop would cost more than the work.
    body = await _brief_body(state, caller.user_id, local_today(caller.timezone))
    if body is None:
        raise HTTPException(404, "No brief yet for today; it is built at your delivery hour.")
    return cached_json(request, body)


@router.get(
    "/{local_date}",
    response_model=BriefOut,
    summary="My brief for one local date (YYYY-MM-DD)",
    responses={**AUTH_ERRORS, **NOT_FOUND, **NOT_MODIFIED},
)
async def by_date(
    request: Request, caller: CallerDep, state: StateDep, local_date: Annotated[IsoDate, Path()]
) -> Response:
    body = await _brief_body(state, caller.user_id, local_date)
    if body is None:
        raise HTTPException(404, "No brief for that date.")
    return cached_json(request, body)
