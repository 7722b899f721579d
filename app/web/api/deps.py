"""Request dependencies: the unit-of-work session, the API state and the authenticated, rate-limited caller."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db import session_scope
from app.web.api import keys
from app.web.api.ratelimit import Limiter
from app.web.api.search import QueryCache, VectorIndex
from app.web.api.settings import ApiSettings


class TTLCache:
    """A small LRU of serialised responses with an age limit (the hot GETs reuse bytes, not ORM objects)."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        self._items: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # handlers run on the threadpool

    def get(self, key: Hashable) -> bytes | None:
        hit = self._items.get(key)
        if hit is None or time.monotonic() - hit[0] > self._ttl:
            return None
        return hit[1]

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class ApiState:
    settings: ApiSettings
    limiter: Limiter
    index: VectorIndex
    queries: QueryCache
    briefs: TTLCache
    searches: TTLCache


async def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="pb_<prefix>_<secret>",
    description="An API key from `podbrief apikey create --email EMAIL` or the preferences page.",
)


@dataclass(frozen=True, slots=True)
class Auth:
    session: Session
    caller: keys.Caller


def get_auth(
    state: Annotated[ApiState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Iterator[Auth]:
    """The request's unit of work, authenticated and rate-limited.

    A sync generator, so FastAPI enters and leaves it on a worker thread: the session's pooled connection is
    taken (by the key lookup) and given back off the event loop, so a full pool can never stall the loop.
    An endpoint may then be `async def` and use the session on the loop: it already holds its connection.
    The session commits when the endpoint returns (scope="function": before the response is sent)."""
    if credentials is None:
        raise HTTPException(401, "Send an API key as 'Authorization: Bearer <key>'.", {"WWW-Authenticate": "Bearer"})
    with session_scope() as session:
        caller = keys.authenticate(session, credentials.credentials)
        if caller is None:
            raise HTTPException(
                401, "Invalid or revoked API key.", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        wait = state.limiter.take(str(caller.key_id))
        if wait > 0:
            retry = str(max(1, math.ceil(wait))) if math.isfinite(wait) else "3600"
            raise HTTPException(
                429,
                "Rate limit exceeded for this API key.",
                {"Retry-After": retry, "X-RateLimit-Limit": str(state.limiter.burst)},
            )
        yield Auth(session, caller)
        if caller.needs_touch:  # at most once a minute per key; commits with the request
            keys.touch(session, caller.key_id)


AuthDep = Annotated[Auth, Depends(get_auth, scope="function")]


async def get_session(auth: AuthDep) -> Session:
    return auth.session


async def get_caller(auth: AuthDep) -> keys.Caller:
    return auth.caller


SessionDep = Annotated[Session, Depends(get_session)]
CallerDep = Annotated[keys.Caller, Depends(get_caller)]
StateDep = Annotated[ApiState, Depends(get_state)]
