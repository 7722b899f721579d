"""Engine, sessions and the declarative Base.

Rule (from Polar): services never commit. `session_scope()` is the unit of work of one request or one task;
it commits on success and rolls back on error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool

from app.config import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_engines: dict[str, Engine] = {}
_unpooled: dict[str, Engine] = {}
_makers: dict[str, sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web app, the worker and beat read while one of them writes; busy_timeout makes a
    # writer wait for the lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _create(url: str, *, pooled: bool) -> Engine:
    """An engine on the shared pool (SQLAlchemy's default for SQLite; sized for the API's threads on PostgreSQL),
    or without one (NullPool: a connection per connect(), closed with it)."""
    unpooled: dict[str, Any] = {"poolclass": NullPool}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        args = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, connect_args=args, **({} if pooled else unpooled))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    shared = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
    return create_engine(url, **(shared if pooled else unpooled))


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().db_url
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = _create(url, pooled=True)
    return engine


def get_unpooled_engine(url: str | None = None) -> Engine:
    """The same database without the shared pool: each connect() opens a connection of the caller's own, closed
    with it. For a connection held for long by one thread that must never wait for the pool (the API's event
    loop: a loop blocked on a full pool can't finish the requests that would give connections back)."""
    url = url or get_settings().db_url
    engine = _unpooled.get(url)
    if engine is None:
        engine = _unpooled[url] = _create(url, pooled=False)
    return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    url = url or get_settings().db_url
    maker = _makers.get(url)
    if maker is None:
        maker = sessionmaker(bind=get_engine(url), expire_on_commit=False)
        _makers[url] = maker
    return maker


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop pooled connections (after fork, and between tests that switch databases)."""
    for engine in (*_engines.values(), *_unpooled.values()):
        engine.dispose()
    _engines.clear()
    _unpooled.clear()
    _makers.clear()
