"""Request dependencies: the unit-of-work session, the API state and the authenticated, rate-limited caller."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from starlette.concurrency import run_in_threadpool

from app.db import get_unpooled_engine, session_scope
from app.web.api import keys
from app.web.api.fastread import Prepared
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


class LoopReader:
    """One autocommit connection per event-loop thread for the few indexed reads done on the loop (API key
    lookup, brief lookup). It is never shared between threads and never taken from the shared pool (its own,
    from get_unpooled_engine), so a busy pool can't stall the loop, even when a loop thread first reads or
    reconnects after a database restart; autocommit means no read transaction pins an old snapshot."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._conns: dict[int, Connection] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._prepared: dict[int, Prepared] = {}

    def first(self, stmt: Select[Any], params: dict[str, Any]) -> Any:
        """The first row of a prebuilt (module-level) SELECT, or None."""
        current = threading.current_thread()
        tid = current.ident or 0
        for attempt in range(2):
            conn = self._conns.get(tid)
            if conn is None or conn.closed or conn.invalidated or self._threads.get(tid) is not current:
                self._prune()
                conn = get_unpooled_engine(self._url).connect().execution_options(isolation_level="AUTOCOMMIT")
                self._conns[tid] = conn
                self._threads[tid] = current
            prepared = self._prepared.get(id(stmt))
            if prepared is None:
                prepared = self._prepared[id(stmt)] = Prepared(stmt, conn.dialect)
            try:
                return prepared.first(conn.connection.dbapi_connection, params)
            except conn.dialect.loaded_dbapi.Error:
                # A dropped connection (database restart): reconnect once, then let the error through.
                self._conns.pop(tid, None)
                conn.invalidate()
                if attempt:
                    raise
        return None

    def _prune(self) -> None:
        """Give back the connections of loop threads that have ended (a test client starts a loop per call)."""
        for tid, thread in list(self._threads.items()):
            reused = tid == threading.get_ident() and thread is not threading.current_thread()
            if reused or not thread.is_alive():
                self._threads.pop(tid, None)
                conn = self._conns.pop(tid, None)
                if conn is not None:
                    conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._threads.clear()


@dataclass
class ApiState:
    settings: ApiSettings
    reader: LoopReader
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


def get_session() -> Iterator[Session]:
    """The request's unit of work: commit when the endpoint returns (scope="function": before the response is
    sent), roll back when it raises. A sync generator, so the pooled connection is taken and given back on a
    worker thread, never on the event loop."""
    with session_scope() as session:
        yield session


async def get_caller(
    state: Annotated[ApiState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> keys.Caller:
    """The authenticated, rate-limited caller. Async on purpose: the key lookup is one indexed read on the
    loop's own connection (LoopReader), so the hot GETs need no thread hop for auth."""
    if credentials is None:
        raise HTTPException(401, "Send an API key as 'Authorization: Bearer <key>'.", {"WWW-Authenticate": "Bearer"})
    caller = keys.authenticate_with(state.reader.first, credentials.credentials)
    if caller is None:
        raise HTTPException(401, "Invalid or revoked API key.", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    wait = state.limiter.take(str(caller.key_id))
    if wait > 0:
        retry = str(max(1, math.ceil(wait))) if math.isfinite(wait) else "3600"
        raise HTTPException(
            429,
            "Rate limit exceeded for this API key.",
            {"Retry-After": retry, "X-RateLimit-Limit": str(state.limiter.burst)},
        )
    if caller.needs_touch:  # a write, at most once a minute per key: its own short transaction, off the loop
        await run_in_threadpool(_touch, caller.key_id)
    return caller


def _touch(key_id: int) -> None:
    with session_scope() as session:
        keys.touch(session, key_id)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[keys.Caller, Depends(get_caller)]
StateDep = Annotated[ApiState, Depends(get_state)]
