"""API keys: `pb_<prefix>_<secret>`, stored as the SHA-256 of the whole key plus the prefix for lookup.

The secret is 256 bits from the CSPRNG, so a plain fast hash is enough (no password stretching needed) and the
comparison is constant-time. The plaintext is returned once, by `create_api_key`, and never stored.
Services never commit: the caller (request, CLI command) does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from app.models import ApiKey, User, utcnow

SCHEME = "pb"
# Touch last_used_at at most this often: a write on every GET would serialise readers on SQLite.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the authenticated key's owner."""

    user_id: int
    key_id: int
    timezone: str
    # last_used_at is older than LAST_USED_RESOLUTION: the caller should `touch` the key (off the hot path).
    needs_touch: bool = False


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """('prefix', 'secret') of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != SCHEME or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def create_api_key(session: Session, user_id: int, name: str = "") -> tuple[str, ApiKey]:
    """Make a key for the user; returns (plaintext shown once, row). Flushes, never commits."""
    while True:
        prefix = secrets.token_hex(4)
        # The prefix is unique in the table; a collision (1 in 4 billion per pair) just draws again.
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    key = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(user_id=user_id, prefix=prefix, key_hash=hash_key(key), name=name[:200])
    session.add(row)
    session.flush()
    return key, row


def revoke_api_key(session: Session, user_id: int, key_id: int) -> bool:
    """Revoke one of the user's keys; False when the user has no such key (someone else's counts as none)."""
    row = session.get(ApiKey, key_id)
    if row is None or row.user_id != user_id:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return True


def list_api_keys(session: Session, user_id: int) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)))


# Built once, run through Core on the session's connection: on every API request this is most of the auth
# cost, and building an ORM select per call cost ~3x more than running it (docs/api.md, "Performance").
_keys, _users = ApiKey.__table__, User.__table__
_LOOKUP = (
    select(_keys.c.id, _keys.c.user_id, _keys.c.key_hash, _keys.c.revoked_at, _keys.c.last_used_at, _users.c.timezone)
    .join(_users, _users.c.id == _keys.c.user_id)
    .where(_keys.c.prefix == bindparam("prefix"))
)


def authenticate(session: Session, presented: str, *, now: dt.datetime | None = None) -> Caller | None:
    """The caller for a presented key, or None for a malformed, unknown, wrong or revoked key. Read-only."""
    return authenticate_with(
        lambda stmt, params: session.connection().execute(stmt, params).first(), presented, now=now
    )


def authenticate_with(
    first: Callable[[Select[Any], dict[str, Any]], Any], presented: str, *, now: dt.datetime | None = None
) -> Caller | None:
    """`authenticate` over any way of running one statement and taking its first row (the API's loop reader)."""
    parts = split_key(presented)
    if parts is None:
        return None
    row = first(_LOOKUP, {"prefix": parts[0]})
    # Compare even when the prefix is unknown so timing says nothing about which prefixes exist.
    expected = row.key_hash if row is not None else "0" * 64
    if not hmac.compare_digest(hash_key(presented), expected) or row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    stale = row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION
    return Caller(user_id=row.user_id, key_id=row.id, timezone=row.timezone, needs_touch=stale)


def touch(session: Session, key_id: int, *, now: dt.datetime | None = None) -> None:
    """Record that a key was used (a write, so it runs at most once a minute per key, in its own transaction)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now or utcnow()))
