"""API keys and rate limits: hashed storage, Bearer auth, revocation, per-key token buckets with 429."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from sqlalchemy import String, Text, select

from app import db
from app.db import Base
from app.models import ApiKey
from app.web.api.keys import authenticate, create_api_key, revoke_api_key, split_key
from app.web.api.ratelimit import MemoryLimiter, RedisLimiter
from tests.test_api_support import Api, api_fixture, make_api, seed_user  # noqa: F401  (fixture `api`)


def test_key_format_and_storage(db_url: str) -> None:
    uid, key = seed_user(db_url, "alice")
    prefix, secret = split_key(key) or ("", "")
    assert key.startswith(f"pb_{prefix}_") and len(secret) >= 43  # 32 random bytes, base64url
    with db.session_scope(db_url) as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.prefix == prefix and row.user_id == uid
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        # The plaintext (or its secret part) is in no text column of any table.
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if isinstance(c.type, String | Text)]
            for r in s.execute(select(*cols)).all() if cols else []:
                assert not any(isinstance(v, str) and secret in v for v in r), table.name


def test_bearer_auth_accepts_only_the_exact_live_key(api: Api) -> None:
    key = api.user("alice")
    assert api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    for headers in (
        {},
        {"Authorization": f"Bearer {flipped}"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer pb_nope"},
        {"Authorization": "Bearer " + key.replace("pb_", "xx_")},
    ):
        r = api.client.get("/api/v1/me", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.pg
def test_revoked_key_is_refused_and_only_the_owner_can_revoke(api: Api) -> None:
    api.user("alice")
    api.user("bob")
    with db.session_scope(api.db_url) as s:
        _, row = create_api_key(s, api.users["alice"], "second")
        alice_second = row.id
        assert revoke_api_key(s, api.users["bob"], alice_second) is False  # bob can't touch alice's key
    r = api.client.delete(f"/api/v1/me/keys/{alice_second}", headers=api.h("bob"))
    assert r.status_code == 404
    alice_first = api.client.get("/api/v1/me/keys", headers=api.h("alice")).json()[0]["id"]
    # The key making the request can't revoke itself (a script would lock itself out mid-run) ...
    assert api.client.delete(f"/api/v1/me/keys/{alice_first}", headers=api.h("alice")).status_code == 409
    # ... another of alice's keys can.
    with db.session_scope(api.db_url) as s:
        key2, _ = create_api_key(s, api.users["alice"], "third")
    r = api.client.delete(f"/api/v1/me/keys/{alice_first}", headers={"Authorization": f"Bearer {key2}"})
    assert r.status_code == 204
    assert api.client.get("/api/v1/me", headers=api.h("alice")).status_code == 401
    listed = api.client.get("/api/v1/me/keys", headers={"Authorization": f"Bearer {key2}"}).json()
    assert [k["revoked_at"] is not None for k in listed if k["id"] == alice_first] == [True]
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_created_key_is_shown_once_and_works(api: Api) -> None:
    api.user("alice")
    r = api.client.post("/api/v1/me/keys", json={"name": "laptop"}, headers=api.h("alice"))
    assert r.status_code == 201
    new = r.json()["key"]
    assert new.startswith("pb_") and r.json()["name"] == "laptop"
    assert (
        api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {new}"}).json()["email"] == "alice@example.com"
    )
    assert new not in api.client.get("/api/v1/me/keys", headers=api.h("alice")).text


def test_last_used_at_is_recorded(api: Api) -> None:
    key = api.user("alice")
    with db.session_scope(api.db_url) as s:
        caller = authenticate(s, key)
        assert caller is not None and caller.user_id == api.users["alice"] and caller.needs_touch
        assert authenticate(s, key + "x") is None
        assert s.scalars(select(ApiKey.last_used_at)).one() is None  # authenticate itself only reads
    assert api.client.get("/api/v1/me", headers=api.h("alice")).status_code == 200
    with db.session_scope(api.db_url) as s:
        used = s.scalars(select(ApiKey.last_used_at)).one()
        assert used is not None
        again = authenticate(s, key)
        assert again is not None and not again.needs_touch  # once a minute at most


def test_rate_limit_is_per_key_with_retry_after(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_api(db_url, monkeypatch, rate_per_second="0.5", burst="3")
    a.user("alice")
    a.user("bob")
    codes = [a.client.get("/api/v1/me", headers=a.h("alice")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = a.client.get("/api/v1/me", headers=a.h("alice"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    # Another key (another user) has its own bucket.
    assert a.client.get("/api/v1/me", headers=a.h("bob")).status_code == 200


def test_memory_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = MemoryLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("other") == 0.0


def _redis_url() -> str | None:
    url = os.environ.get("PODBRIEF_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=0.5).ping()
    except Exception:
        return None
    return url


def test_redis_bucket_is_shared_between_limiters() -> None:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"podbrief:test:{os.getpid()}:"
    one = RedisLimiter(url, rate=0.1, burst=2, prefix=prefix)
    two = RedisLimiter(url, rate=0.1, burst=2, prefix=prefix)  # a second web process
    assert one.take("k") == 0.0
    assert two.take("k") == 0.0
    wait = one.take("k")
    assert 0 < wait <= 10.0
    assert two.take("other") == 0.0


def test_redis_outage_fails_open() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", rate=1, burst=1)
    assert limiter.take("k") == 0.0


@pytest.mark.pg
def test_loop_reader_returns_what_sqlalchemy_returns(db_url: str) -> None:
    """The raw-cursor reader (fastread) converts values exactly as Connection.execute does."""
    import datetime as dt

    from app.models import Brief, utcnow
    from app.web.api.deps import LoopReader
    from app.web.api.keys import _LOOKUP
    from app.web.api.routes_briefs import _HEAD

    uid, key = seed_user(db_url, "alice")
    day = dt.date(2026, 11, 26)
    with db.session_scope(db_url) as s:
        s.add(Brief(user_id=uid, local_date=day))
        row = s.scalars(select(ApiKey)).one()
        row.last_used_at = row.revoked_at = utcnow()
    reader = LoopReader(db_url)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (_LOOKUP, {"prefix": key.split("_")[1]}),
        (_HEAD, {"user_id": uid, "local_date": day}),
    ]
    with db.get_engine(db_url).connect() as conn:
        for stmt, params in cases:
            expected = conn.execute(stmt, params).first()
            got = reader.first(stmt, params)
            assert expected is not None and tuple(got) == tuple(expected)
            assert all(getattr(got, k) == getattr(expected, k) for k in expected._fields)
        assert reader.first(_HEAD, {"user_id": uid, "local_date": day + dt.timedelta(days=1)}) is None
    assert isinstance(reader.first(_LOOKUP, cases[0][1]).revoked_at, dt.datetime)
    reader.close()


def test_loop_reader_gives_back_connections_of_ended_threads(db_url: str) -> None:
    """A test client runs each call on a new loop thread: the reader must not keep a connection per thread."""
    import threading

    from app.web.api.deps import LoopReader
    from app.web.api.keys import _LOOKUP

    reader = LoopReader(db_url)
    for _ in range(40):  # more than the pool's 15 connections
        t = threading.Thread(target=reader.first, args=(_LOOKUP, {"prefix": "nope"}))
        t.start()
        t.join()
    assert reader.first(_LOOKUP, {"prefix": "nope"}) is None
    assert list(reader._conns) == [threading.get_ident()]  # the ended threads' connections went back
    reader.close()


@pytest.mark.pg
def test_loop_reader_reads_while_every_pooled_connection_is_taken(db_url: str) -> None:
    """The loop's reads never wait for the shared pool: with all of its connections held by request threads (which
    need the loop to go on before they give them back), a loop thread's first read still answers at once rather
    than after the pool's 30 s timeout, with the loop stopped all that time."""
    import threading

    from app.web.api.deps import LoopReader
    from app.web.api.keys import _LOOKUP

    engine = db.get_engine(db_url)
    capacity = engine.pool.size() + engine.pool._max_overflow  # type: ignore[attr-defined]
    held = [engine.connect() for _ in range(capacity)]
    reader = LoopReader(db_url)
    answers: list[Any] = []
    loop = threading.Thread(target=lambda: answers.append(reader.first(_LOOKUP, {"prefix": "nope"})))
    loop.start()
    loop.join(timeout=10)
    waited = loop.is_alive()
    for conn in held:
        conn.close()
    loop.join()
    reader.close()
    assert not waited and answers == [None]
