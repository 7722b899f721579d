"""/api/v1/me: the caller's account (interests, time zone, delivery hour), API keys and feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import select

from app.models import Feedback, User
from app.web.api import keys
from app.web.api.deps import CallerDep, SessionDep
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
from app.web.api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, FeedbackOut, MeOut, MePatch, Page

MAX_ID = 2**63 - 1
router = APIRouter(prefix="/me", tags=["me"])


def _me(u: User) -> MeOut:
    return MeOut(
        id=u.id,
        email=u.email,
        interests=u.interests or "",
        timezone=u.timezone,
        delivery_hour=u.delivery_hour,
        confirmed=u.confirmed,
        paused=u.paused,
        created_at=u.created_at,
    )


def _user(session: SessionDep, caller: keys.Caller) -> User:
    user = session.get(User, caller.user_id)
    if user is None:  # deleted between authentication and here
        raise HTTPException(401, "Invalid or revoked API key.")
    return user


@router.get("", response_model=MeOut, summary="My account", responses={**AUTH_ERRORS, **NOT_MODIFIED})
def get_me(request: Request, session: SessionDep, caller: CallerDep) -> Response:
    return model_json(request, _me(_user(session, caller)))


@router.patch(
    "",
    response_model=MeOut,
    summary="Change my interests, time zone or delivery hour",
    responses={**AUTH_ERRORS, **BAD_BODY},
)
def patch_me(session: SessionDep, caller: CallerDep, body: MePatch) -> Response:
    user = _user(session, caller)
    if body.interests is not None:
        user.interests = body.interests.strip()
    if body.timezone is not None:
        user.timezone = body.timezone
    if body.delivery_hour is not None:
        user.delivery_hour = body.delivery_hour
    session.flush()
    return plain_json(_me(user))


def _key_out(k: object) -> ApiKeyOut:
    return ApiKeyOut.model_validate(k, from_attributes=True)


@router.get("/keys", response_model=list[ApiKeyOut], summary="My API keys", responses={**AUTH_ERRORS, **NOT_MODIFIED})
def list_keys(request: Request, session: SessionDep, caller: CallerDep) -> Response:
    body = b"[" + b",".join(_key_out(k).model_dump_json().encode() for k in keys.list_api_keys(session, caller.user_id))
    return cached_json(request, body + b"]")


@router.post(
    "/keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    responses={**AUTH_ERRORS, **BAD_BODY},
)
def create_key(session: SessionDep, caller: CallerDep, body: ApiKeyCreate) -> Response:
    key, row = keys.create_api_key(session, caller.user_id, body.name)
    return plain_json(ApiKeyCreated(**_key_out(row).model_dump(), key=key), status_code=201)


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke one of my API keys (not the one making this request)",
    responses={**AUTH_ERRORS, **NOT_FOUND, 409: error_doc("That key is the one making this request")},
)
def revoke_key(session: SessionDep, caller: CallerDep, key_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    if key_id == caller.key_id:
        # Revoking the key in hand would lock a script out mid-run; do it with another key or on the website.
        raise HTTPException(409, "This request is authenticated with that key; revoke it using another key.")
    if not keys.revoke_api_key(session, caller.user_id, key_id):
        raise HTTPException(404, "No such API key.")
    return Response(status_code=204)


@router.get(
    "/feedback",
    response_model=Page[FeedbackOut],
    summary="Feedback I gave, newest first",
    responses={**AUTH_ERRORS, **BAD_CURSOR, **NOT_MODIFIED},
)
def list_feedback(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    before = int_cursor(cursor, "f")
    stmt = select(Feedback).where(Feedback.user_id == caller.user_id)
    if before is not None:
        stmt = stmt.where(Feedback.id < before)
    rows = list(session.scalars(stmt.order_by(Feedback.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [FeedbackOut(id=f.id, insight_id=f.insight_id, kind=f.kind, created_at=f.created_at) for f in rows]
    return model_json(
        request, Page[FeedbackOut](items=items, next_cursor=encode_cursor("f", rows[-1].id) if more else None)
    )
