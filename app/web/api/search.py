"""In-process exact vector search over every embedded insight.

The index is one normalised float32 matrix (rows = insights) plus parallel arrays of ids, podcast ids, episode
ids and publication days, so a query is a single matrix-vector product, a vectorised filter mask and an
argpartition: no Python loop per row. It loads incrementally: each refresh (at most every
`refresh_seconds`) reads only insights with an id above the highest one seen, plus the few that had no
embedding yet when they were first seen (embedding runs after extraction). Rows live in a buffer that grows by
doubling, so appends cost amortised O(new rows) and a query's snapshot (views of the first n rows) never sees
a half-written row.

Exact search is the right tool at this scale (performance.md 4.1: 1M x 384 float32 is ~1.5 GB and ~0.1 s per
query on a small VM; 100k rows is ~10 ms). Past that, an ANN index would replace `_scores` here.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.ml import encoder
from app.models import Episode, Insight

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def day_number(value: dt.date) -> int:
    return (value - EPOCH.date()).days


@dataclass(frozen=True, slots=True)
class Filters:
    podcast_id: int | None = None
    episode_id: int | None = None
    since: dt.date | None = None  # publication day, inclusive
    until: dt.date | None = None  # inclusive

    def mask(self, podcast: np.ndarray, episode: np.ndarray, day: np.ndarray) -> np.ndarray | None:
        mask: np.ndarray | None = None
        for arr, op, value in (
            (podcast, np.equal, self.podcast_id),
            (episode, np.equal, self.episode_id),
            (day, np.greater_equal, None if self.since is None else day_number(self.since)),
            (day, np.less_equal, None if self.until is None else day_number(self.until)),
        ):
            if value is not None:
                part = op(arr, value)
                mask = part if mask is None else mask & part
        return mask


@dataclass(frozen=True, slots=True)
class Snapshot:
    ids: np.ndarray
    podcast: np.ndarray
    episode: np.ndarray
    day: np.ndarray
    matrix: np.ndarray

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])


class QueryCache:
    """LRU of query text -> unit vector: encoding a query is the model-bound part of search (~10 ms on CPU)."""

    def __init__(self, size: int, encode: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self._size = size
        self._encode = encode
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def normalise(text: str) -> str:
        # MiniLM's tokenizer lower-cases and splits on whitespace, so these variants embed identically.
        return " ".join(text.split()).lower()

    def vector(self, text: str) -> np.ndarray:
        key = self.normalise(text)
        with self._lock:
            vec = self._items.get(key)
            if vec is not None:
                self._items.move_to_end(key)
                return vec
        encode = self._encode or encoder.encode  # looked up per call so tests can swap the model
        vec = np.ascontiguousarray(encode([key])[0], dtype=np.float32)
        vec.setflags(write=False)
        with self._lock:
            self._items[key] = vec
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return vec


class VectorIndex:
    def __init__(self, *, model: str, dim: int = encoder.DIM, refresh_seconds: float = 1.0) -> None:
        self.model = model
        self.dim = dim
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._n = 0
        self._cap = 0
        self._ids = np.empty(0, np.int64)
        self._podcast = np.empty(0, np.int64)
        self._episode = np.empty(0, np.int64)
        self._day = np.empty(0, np.int32)
        self._matrix = np.empty((0, dim), np.float32)
        self._row_of: dict[int, int] = {}
        self._max_id = 0
        self._pending: set[int] = set()  # seen without an embedding yet
        self._checked = -float("inf")
        self.version = 0  # bumps whenever rows are added: response caches key on it

    # ---- loading ---------------------------------------------------------------------------------------
    def refresh_due(self) -> bool:
        return time.monotonic() - self._checked >= self.refresh_seconds

    def refresh(self, session: Session, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_seconds:
            return
        # The session's connection first, the lock second. Requests that already hold a pooled connection wait
        # here for the lock (get_insight reads before it refreshes); if the lock's holder then waited on the
        # pool for its own connection, a burst of such requests could hold every connection and nothing would
        # move until the pool's timeout (seen: 60 concurrent GETs against a pool of 15, one run in ~10).
        session.connection()
        with self._lock:
            if not force and now - self._checked < self.refresh_seconds:
                return  # another thread refreshed while this one waited
            self._load(session)
            self._checked = time.monotonic()

    def _load(self, session: Session) -> None:
        pending = sorted(self._pending)
        cond = Insight.id > self._max_id
        if pending:
            # Bounded IN list: anything older than the last 5,000 never-embedded rows is given up on.
            cond = or_(cond, Insight.id.in_(pending[-5000:]))
        rows = session.execute(
            select(
                Insight.id,
                Insight.embedding,
                Insight.embedding_model,
                Episode.podcast_id,
                Insight.episode_id,
                func.coalesce(Episode.published_at, Insight.created_at),
            )
            .join(Episode, Episode.id == Insight.episode_id)
            .where(cond)
            .order_by(Insight.id)
        ).all()
        blobs: list[bytes] = []
        meta: list[tuple[int, int, int, int]] = []
        for iid, blob, model, podcast_id, episode_id, when in rows:  # per new row, once; never per query
            self._max_id = max(self._max_id, iid)
            if blob is None or len(blob) != self.dim * 4 or (model and model != self.model):
                if blob is None:
                    self._pending.add(iid)
                continue
            self._pending.discard(iid)
            if iid in self._row_of:
                continue
            blobs.append(blob)
            when = when if isinstance(when, dt.datetime) else EPOCH
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            meta.append((iid, podcast_id, episode_id, day_number(when.astimezone(dt.UTC).date())))
        if len(self._pending) > 5000:
            self._pending = set(sorted(self._pending)[-5000:])
        if blobs:
            self._append(np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, self.dim), meta)

    def _append(self, vecs: np.ndarray, meta: Sequence[tuple[int, int, int, int]]) -> None:
        need = self._n + len(meta)
        if need > self._cap:
            cap = max(1024, self._cap * 2, need)
            self._ids = _grow(self._ids, cap, self._n)
            self._podcast = _grow(self._podcast, cap, self._n)
            self._episode = _grow(self._episode, cap, self._n)
            self._day = _grow(self._day, cap, self._n)
            self._matrix = _grow(self._matrix, cap, self._n)
            self._cap = cap
        cols = np.asarray(meta, dtype=np.int64).reshape(-1, 4)
        end = need
        self._ids[self._n : end] = cols[:, 0]
        self._podcast[self._n : end] = cols[:, 1]
        self._episode[self._n : end] = cols[:, 2]
        self._day[self._n : end] = cols[:, 3]
        self._matrix[self._n : end] = vecs
        for offset, iid in enumerate(cols[:, 0].tolist()):
            self._row_of[iid] = self._n + offset
        self._n = end  # publish last: snapshots taken before this line see only complete rows
        self.version += 1

    def snapshot(self) -> Snapshot:
        n = self._n
        return Snapshot(self._ids[:n], self._podcast[:n], self._episode[:n], self._day[:n], self._matrix[:n])

    def vector_of(self, insight_id: int) -> np.ndarray | None:
        row = self._row_of.get(insight_id)
        return None if row is None else self._matrix[row]

    # ---- querying ---------------------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, *, k: int, filters: Filters | None = None, exclude: int | None = None
    ) -> list[tuple[int, float]]:
        """The k most similar (insight id, cosine) pairs, best first, among rows passing the filters."""
        snap = self.snapshot()
        if snap.size == 0 or k <= 0:
            return []
        scores = snap.matrix @ np.asarray(query, dtype=np.float32)
        mask = filters.mask(snap.podcast, snap.episode, snap.day) if filters else None
        if exclude is not None:
            keep = snap.ids != exclude
            mask = keep if mask is None else mask & keep
        if mask is not None:
            candidates = np.flatnonzero(mask)
            scores = scores[candidates]
        else:
            candidates = None
        if scores.shape[0] == 0:
            return []
        k = min(k, int(scores.shape[0]))
        top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
        top = top[np.lexsort((top, -scores[top]))]  # best first; ties broken by position for stable pages
        rows = top if candidates is None else candidates[top]
        return list(zip(snap.ids[rows].tolist(), scores[top].astype(float).tolist(), strict=True))


def _grow(arr: np.ndarray, cap: int, n: int) -> np.ndarray:
    new = np.empty((cap, *arr.shape[1:]), dtype=arr.dtype)
    new[:n] = arr[:n]
    return new
