"""The in-process vector index behind ?q= and related insights."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import select

from app import db
from app.ml import encoder
from app.models import Insight
from app.web.api.search import Filters, QueryCache, VectorIndex
from tests.test_api_support import add_episode, fake_encode


def _brute_force(rows: list[tuple[int, int, np.ndarray]], q: np.ndarray, k: int, podcast: int | None) -> list[int]:
    scored = [(float(v @ q), iid) for iid, pid, v in rows if podcast is None or pid == podcast]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [iid for _, iid in scored[:k]]


def test_index_matches_brute_force_and_loads_incrementally(db_url: str) -> None:
    rng = np.random.default_rng(1)
    index = VectorIndex(model="all-MiniLM-L6-v2", refresh_seconds=0)
    texts = [" ".join(rng.choice(["sleep", "memory", "rates", "tax", "coffee", "gym", "ai"], 3)) for _ in range(60)]
    add_episode(db_url, texts[:30], title="A")
    with db.session_scope(db_url) as s:
        index.refresh(s)
    assert index.snapshot().size == 30
    version = index.version
    add_episode(db_url, texts[30:], title="B")
    with db.session_scope(db_url) as s:
        index.refresh(s)
        assert index.version == version + 1 and index.snapshot().size == 60
        rows = [
            (iid, pid, encoder.from_blob(blob or b""))
            for iid, pid, blob in s.execute(
                select(Insight.id, Insight.episode_id, Insight.embedding).order_by(Insight.id)
            ).all()
        ]
    q = fake_encode(["sleep memory"])[0]
    got = [i for i, _ in index.search(q, k=10)]
    # Ties (same words) are possible: compare the score multiset and the ordering rule, not just ids.
    assert got == _brute_force(rows, q, 10, None)
    episode = rows[0][1]
    filtered = index.search(q, k=100, filters=Filters(episode_id=episode))
    assert {i for i, _ in filtered} == {iid for iid, ep, _ in rows if ep == episode}


def test_rows_embedded_later_are_picked_up(db_url: str) -> None:
    index = VectorIndex(model="all-MiniLM-L6-v2", refresh_seconds=0)
    _, _, ids = add_episode(db_url, ["sleep and memory", "tax policy"], embed=False)
    add_episode(db_url, ["coffee"], title="Later")  # a higher id, embedded: max id moves past the first two
    with db.session_scope(db_url) as s:
        index.refresh(s)
    assert index.snapshot().size == 1
    with db.session_scope(db_url) as s:
        for iid, text in zip(ids, ["sleep and memory", "tax policy"], strict=True):
            row = s.get(Insight, iid)
            assert row is not None
            row.embedding = encoder.to_blob(fake_encode([text])[0])
            row.embedding_model = "all-MiniLM-L6-v2"
    with db.session_scope(db_url) as s:
        index.refresh(s)
    assert index.snapshot().size == 3
    assert index.search(fake_encode(["sleep memory"])[0], k=1)[0][0] == ids[0]


def test_date_filter_and_growth_past_capacity(db_url: str) -> None:
    index = VectorIndex(model="all-MiniLM-L6-v2", refresh_seconds=0)
    march = dt.datetime(2026, 3, 5, tzinfo=dt.UTC)
    add_episode(db_url, [f"w{i} sleep" for i in range(700)], title="Big", published=march)
    add_episode(db_url, [f"v{i} sleep" for i in range(700)], title="Big2", published=march + dt.timedelta(days=30))
    with db.session_scope(db_url) as s:
        index.refresh(s)
    assert index.snapshot().size == 1400  # crossed the first 1,024-row buffer
    q = fake_encode(["sleep"])[0]
    in_march = index.search(q, k=2000, filters=Filters(since=dt.date(2026, 3, 1), until=dt.date(2026, 3, 31)))
    assert len(in_march) == 700


def test_query_cache_encodes_each_normalised_query_once() -> None:
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return fake_encode(texts)

    cache = QueryCache(2, encode=counting)
    a = cache.vector("Sleep   Memory")
    b = cache.vector("sleep memory")
    assert a is b and calls == [["sleep memory"]]
    cache.vector("x")
    cache.vector("y")  # evicts "sleep memory" (least recently used)
    cache.vector("sleep memory")
    assert len(calls) == 4


@pytest.mark.slow
def test_real_model_ranks_the_matching_insight_first(db_url: str) -> None:
    texts = [
        "Deep sleep is when the brain consolidates what you learned during the day.",
        "The central bank raised interest rates to cool down inflation.",
        "Strength training twice a week preserves muscle as you age.",
    ]
    _, _, ids = add_episode(db_url, texts, embed=False)
    vecs = encoder.encode(texts)
    with db.session_scope(db_url) as s:
        for iid, v in zip(ids, vecs, strict=True):
            row = s.get(Insight, iid)
            assert row is not None
            row.embedding, row.embedding_model = encoder.to_blob(v), encoder.model_name()
    index = VectorIndex(model=encoder.model_name(), refresh_seconds=0)
    with db.session_scope(db_url) as s:
        index.refresh(s)
    q = QueryCache(8).vector("how does rest help memory")
    assert index.search(q, k=1)[0][0] == ids[0]


def test_a_request_holding_a_connection_and_a_refresh_needing_one_do_not_deadlock(db_url: str) -> None:
    """get_insight reads (holding a pooled connection) and then refreshes; a search's refresh starts on a fresh
    session. With one connection in the pool: if the fresh refresh took the index lock before its connection,
    each would wait on the other until the pool's timeout."""
    import threading
    import time

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    add_episode(db_url, ["sleep improves memory", "rates fell", "coffee and focus"])
    engine = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=3)
    index = VectorIndex(model="all-MiniLM-L6-v2", refresh_seconds=0)
    errors: list[BaseException] = []

    def fresh_refresh() -> None:
        try:
            with Session(engine) as s:
                index.refresh(s)
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    try:
        with Session(engine) as holding:
            holding.execute(select(1))  # the pool's only connection, as a request's read would hold it
            other = threading.Thread(target=fresh_refresh)
            other.start()
            deadline = time.monotonic() + 1.0  # let the other thread get as far as it can without a connection
            while time.monotonic() < deadline and not index._lock.locked():
                time.sleep(0.01)
            time.sleep(0.1)
            index.refresh(holding, force=True)
            assert index.snapshot().size == 3
        other.join(timeout=10)
        assert not other.is_alive() and errors == []
    finally:
        engine.dispose()
