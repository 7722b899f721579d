"""/api/v1/podcasts: the catalogue plus the shows the caller follows; subscribe by URL; OPML in and out.

Visibility: a podcast is in the shared catalogue once ingestion has found episodes in it. A feed someone
submitted that has not (yet) produced episodes is visible only to the users who follow it, so nobody learns
what URLs other users submitted, or why a fetch was refused.
Subscribing never fetches in the request (no SSRF timing oracle, reliability.md A7): the feed row is created,
committed, and a worker polls it through the guarded fetcher.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from app.errors import PipelineError
from app.models import Episode, Podcast, Subscription
from app.web.api import opml
from app.web.api.deps import CallerDep, SessionDep, StateDep
from app.web.api.http import (
    AUTH_ERRORS,
    BAD_BODY,
    BAD_CURSOR,
    NOT_FOUND,
    NOT_MODIFIED,
    cached_json,
    encode_cursor,
    error_doc,
    int_cursor,
    model_json,
    plain_json,
)
from app.web.api.schemas import FEED_URL_PATTERN, OpmlImportResult, OpmlRejected, Page, PodcastOut, SubscribeIn

log = logging.getLogger(__name__)
MAX_ID = 2**63 - 1
router = APIRouter(prefix="/podcasts", tags=["podcasts"])
_FEED_URL = re.compile(FEED_URL_PATTERN)
OPML_TYPES = ("text/x-opml", "application/xml", "text/xml")


def _mine(user_id: int) -> ColumnElement[bool]:
    return exists().where(and_(Subscription.podcast_id == Podcast.id, Subscription.user_id == user_id))


def _visible(user_id: int) -> ColumnElement[bool]:
    return or_(exists().where(Episode.podcast_id == Podcast.id), _mine(user_id))


def _out(p: Podcast, subscribed: bool) -> PodcastOut:
    return PodcastOut(
        id=p.id,
        feed_url=p.feed_url,
        title=p.title or "",
        description=p.description or "",
        site_url=p.site_url,
        image_url=p.image_url,
        status=p.status,
        last_checked_at=p.last_checked_at,
        created_at=p.created_at,
        subscribed=subscribed,
    )


def _subscribed_ids(session: Session, user_id: int) -> set[int]:
    return set(session.scalars(select(Subscription.podcast_id).where(Subscription.user_id == user_id)))


@router.get(
    "",
    response_model=Page[PodcastOut],
    summary="Podcasts in the catalogue and the ones I follow",
    responses={**AUTH_ERRORS, **BAD_CURSOR, **NOT_MODIFIED},
)
def list_podcasts(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    subscribed: Annotated[bool | None, Query(description="true: only the shows I follow")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    after = int_cursor(cursor, "p")
    stmt = select(Podcast).where(_mine(caller.user_id) if subscribed else _visible(caller.user_id))
    if subscribed is False:
        stmt = stmt.where(~_mine(caller.user_id))
    if after is not None:
        stmt = stmt.where(Podcast.id > after)
    rows = list(session.scalars(stmt.order_by(Podcast.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    mine = _subscribed_ids(session, caller.user_id)
    page = Page[PodcastOut](
        items=[_out(p, p.id in mine) for p in rows], next_cursor=encode_cursor("p", rows[-1].id) if more else None
    )
    return model_json(request, page)


def _subscribe(session: Session, user_id: int, url: str, limit: int) -> tuple[Podcast, bool]:
    """Follow a feed; returns (podcast, needs a first poll). Raises HTTPException for refusals."""
    from app.pipeline import feeds  # lazy: the web layer reaches the stage only when it subscribes

    count = session.scalar(select(func.count()).select_from(Subscription).where(Subscription.user_id == user_id))
    try:
        podcast = feeds.subscribe(session, url)
    except (PipelineError, ValueError) as exc:
        raise HTTPException(422, f"Feed URL refused: {getattr(exc, 'reason', exc)}") from None
    exists_row = session.scalar(
        select(Subscription.id).where(Subscription.user_id == user_id, Subscription.podcast_id == podcast.id)
    )
    if exists_row is None:
        if (count or 0) >= limit:
            raise HTTPException(409, f"You already follow {limit} podcasts, the most allowed.")
        session.add(Subscription(user_id=user_id, podcast_id=podcast.id))
        session.flush()
    return podcast, podcast.last_checked_at is None


def _enqueue_polls(podcast_ids: list[int]) -> None:
    """After the commit: ask a worker to poll now. Failure is only logged: beat polls due feeds anyway
    (next_check_at starts at creation time), so the subscription is never lost."""
    if not podcast_ids:
        return
    try:
        from workers import enqueue

        for pid in podcast_ids:
            enqueue.subscribe_feed(pid)
    except Exception as exc:
        log.warning("could not enqueue first poll of %s: %s", podcast_ids, exc)


@router.post(
    "",
    status_code=202,
    response_model=PodcastOut,
    summary="Follow a feed by URL (it is fetched later by a worker, through the SSRF-guarded client)",
    responses={**AUTH_ERRORS, **BAD_BODY, 409: error_doc("Feed limit reached")},
)
def subscribe(session: SessionDep, caller: CallerDep, state: StateDep, body: SubscribeIn) -> Response:
    podcast, first_poll = _subscribe(session, caller.user_id, body.feed_url, state.settings.max_feeds_per_user)
    out = _out(podcast, True)
    session.commit()  # the request boundary: the worker must find the row when it runs
    _enqueue_polls([podcast.id] if first_poll else [])
    return plain_json(out, status_code=202)


@router.get(
    "/opml",
    summary="Export the shows I follow as OPML 2.0",
    response_class=Response,
    responses={
        200: {"content": {"text/x-opml": {"schema": {"type": "string"}}}, "description": "OPML document"},
        **AUTH_ERRORS,
        **NOT_MODIFIED,
    },
)
def export_opml(request: Request, session: SessionDep, caller: CallerDep) -> Response:
    rows = session.scalars(select(Podcast).where(_mine(caller.user_id)).order_by(Podcast.id))
    body = opml.export(rows)
    resp = cached_json(request, body)
    if resp.status_code == 200:
        resp.headers["Content-Type"] = "text/x-opml; charset=utf-8"
        resp.headers["Content-Disposition"] = 'attachment; filename="podbrief.opml"'
    return resp


@router.post(
    "/opml",
    response_model=OpmlImportResult,
    summary="Follow every feed in an OPML document",
    description="Feeds already followed are kept; each outline that can't be followed is listed with a reason. "
    "A body that is not OPML imports nothing and says why in `rejected`.",
    openapi_extra={
        "requestBody": {
            "required": True,
            # Any bytes: a document that is not OPML is answered with what could be imported (nothing) and why.
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in OPML_TYPES},
        }
    },
    responses={**AUTH_ERRORS, 413: error_doc("Document too large"), 415: error_doc("Not an OPML/XML media type")},
)
async def import_opml(request: Request, session: SessionDep, caller: CallerDep, state: StateDep) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in OPML_TYPES:
        raise HTTPException(415, f"Send the OPML document as one of: {', '.join(OPML_TYPES)}.")
    data = bytearray()
    async for chunk in request.stream():  # stop reading at the limit instead of buffering any size
        data += chunk
        if len(data) > state.settings.max_opml_bytes:
            raise HTTPException(413, f"OPML documents are limited to {state.settings.max_opml_bytes} bytes.")
    from starlette.concurrency import run_in_threadpool

    # The request's own session (one writer at a time on SQLite), used from one worker thread at a time.
    result, polls = await run_in_threadpool(
        _import, session, bytes(data), caller.user_id, state.settings.max_feeds_per_user
    )
    await run_in_threadpool(session.commit)
    _enqueue_polls(polls)
    return plain_json(result)


def _import(session: Session, data: bytes, user_id: int, limit: int) -> tuple[OpmlImportResult, list[int]]:
    rejected: list[OpmlRejected] = []
    subscribed: list[PodcastOut] = []
    polls: list[int] = []
    try:
        urls = opml.feed_urls(data, limit=limit)
    except ValueError as exc:
        return OpmlImportResult(subscribed=[], rejected=[OpmlRejected(url="", reason=str(exc))]), []
    for url in urls:
        if len(url) > 2048 or not _FEED_URL.match(url):
            rejected.append(OpmlRejected(url=url[:2048], reason="not an http(s) URL with a host name"))
            continue
        try:
            podcast, first = _subscribe(session, user_id, url, limit)
        except HTTPException as exc:  # refused before anything is written: the other feeds still go in
            rejected.append(OpmlRejected(url=url, reason=str(exc.detail)))
            continue
        subscribed.append(_out(podcast, True))
        if first:
            polls.append(podcast.id)
    return OpmlImportResult(subscribed=subscribed, rejected=rejected), polls


@router.get(
    "/{podcast_id}",
    response_model=PodcastOut,
    summary="One podcast",
    responses={**AUTH_ERRORS, **NOT_FOUND, **NOT_MODIFIED},
)
def get_podcast(
    request: Request, session: SessionDep, caller: CallerDep, podcast_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> Response:
    p = session.scalar(select(Podcast).where(Podcast.id == podcast_id, _visible(caller.user_id)))
    if p is None:
        raise HTTPException(404, "No such podcast.")
    return model_json(request, _out(p, p.id in _subscribed_ids(session, caller.user_id)))


@router.delete(
    "/{podcast_id}/subscription",
    status_code=204,
    response_class=Response,
    summary="Stop following a podcast",
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def unsubscribe(session: SessionDep, caller: CallerDep, podcast_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    sub = session.scalar(
        select(Subscription).where(Subscription.user_id == caller.user_id, Subscription.podcast_id == podcast_id)
    )
    if sub is None:
        raise HTTPException(404, "You don't follow that podcast.")
    session.delete(sub)
    return Response(status_code=204)
