"""Shared helpers for the API tests (imported by tests/test_api_*.py): an app client, users with keys, a tiny
catalogue with embeddings from a deterministic stand-in encoder (no model load: the real one is @slow)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import db
from app.ml import encoder
from app.models import Brief, BriefItem, Episode, Insight, Podcast, TranscriptSegment, User
from app.web.api.keys import create_api_key

DIM = encoder.DIM
REPO = Path(__file__).resolve().parent.parent


def fake_encode(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Bag of hashed words, L2-normalised: texts sharing words are similar, as with a real model."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            word = word.strip(".,!?")
            if word:
                out[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norm = np.linalg.norm(out[row])
        if norm:
            out[row] /= norm
    return out


@dataclass
class Api:
    db_url: str
    client: TestClient
    keys: dict[str, str] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    def user(self, name: str, *, timezone: str = "UTC") -> str:
        """Create user `name` with one API key; returns the key."""
        self.users[name], key = seed_user(self.db_url, name, timezone=timezone)
        self.keys[name] = key
        return key

    def h(self, name: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}", **extra}

    def get(self, name: str, url: str, **kw: object) -> object:
        return self.client.get(url, headers=self.h(name), **kw)  # type: ignore[arg-type]


def seed_user(db_url: str, name: str, *, timezone: str = "UTC") -> tuple[int, str]:
    """A user with one API key: (user id, key)."""
    with db.session_scope(db_url) as s:
        u = User(email=f"{name}@example.com", interests="", timezone=timezone, token=f"tok-{name}")
        s.add(u)
        s.flush()
        key, _ = create_api_key(s, u.id, "test")
        return u.id, key


def add_episode(
    db_url: str,
    texts: list[str],
    *,
    title: str = "Show",
    feed_url: str | None = None,
    published: dt.datetime | None = None,
    embed: bool = True,
) -> tuple[int, int, list[int]]:
    """A podcast (reused by feed URL) with one episode, transcript segments and one insight per text."""
    feed_url = feed_url or f"https://{title.lower().replace(' ', '-')}.example.com/feed.xml"
    published = published or dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    with db.session_scope(db_url) as s:
        p = s.query(Podcast).filter_by(feed_url=feed_url).one_or_none()
        if p is None:
            p = Podcast(feed_url=feed_url, title=title, last_checked_at=published)
            s.add(p)
            s.flush()
        e = Episode(
            podcast_id=p.id,
            guid=f"{title}-{published.isoformat()}-{len(texts)}-{texts[0][:20]}",
            title=f"{title} episode",
            published_at=published,
            status="ready",
            transcript_source="publisher:text/vtt",
        )
        s.add(e)
        s.flush()
        vecs = fake_encode(texts)
        ids = []
        for i, text in enumerate(texts):
            s.add(TranscriptSegment(episode_id=e.id, idx=i, start=10.0 * i, end=10.0 * i + 9, text=text))
            ins = Insight(
                episode_id=e.id,
                idx=i,
                start=10.0 * i,
                end=10.0 * i + 9,
                text=text,
                substance=0.5,
                embedding=encoder.to_blob(vecs[i]) if embed else None,
                embedding_model="all-MiniLM-L6-v2" if embed else None,
            )
            s.add(ins)
            s.flush()
            ids.append(ins.id)
        return p.id, e.id, ids


def add_brief(db_url: str, user_id: int, local_date: dt.date, insight_ids: list[int]) -> int:
    with db.session_scope(db_url) as s:
        b = Brief(user_id=user_id, local_date=local_date)
        s.add(b)
        s.flush()
        for pos, iid in enumerate(insight_ids):
            s.add(BriefItem(brief_id=b.id, insight_id=iid, position=pos, score=1.0 - pos / 10, why="matches you"))
        return b.id


def make_api(db_url: str, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Api:
    from app.web.app import create_app

    monkeypatch.setattr(encoder, "encode", fake_encode)
    monkeypatch.setenv("PODBRIEF_API_INDEX_REFRESH_SECONDS", "0")
    for name, value in settings.items():
        monkeypatch.setenv(f"PODBRIEF_API_{name.upper()}", value)
    return Api(db_url=db_url, client=TestClient(create_app()))


@pytest.fixture(name="api")
def api_fixture(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """An app client with generous rate limits; import `api_fixture` to use it as the `api` fixture."""
    a = make_api(db_url, monkeypatch, rate_per_second="1000", burst="1000")
    yield a
    a.client.close()
