"""briefs.build on a real (migrated) database, with hand-made vectors instead of the model."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import select

from app.ml import encoder
from app.models import Brief, BriefItem, Episode, EpisodeStatus, Insight, Podcast, User
from app.pipeline import briefs

NOW = dt.datetime(2026, 11, 20, 7, 0, tzinfo=dt.UTC)


def axis(i: int, j: int | None = None) -> np.ndarray:
    v = np.zeros(encoder.DIM, dtype=np.float32)
    v[i] = 1.0
    if j is not None:
        v[j] = 0.7
    return v / np.linalg.norm(v)


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Interest phrases mentioning "bread" point along axis 0, everything else along axis 1.
    def encode(texts: list[str], **_: object) -> np.ndarray:
        return np.stack([axis(0) if "bread" in t else axis(1) for t in texts])

    monkeypatch.setattr(briefs.encoder, "encode", encode)


def add_episode(session, podcast: Podcast, guid: str, published: dt.datetime, topic_axis: int, n: int) -> Episode:
    # created_at = published: "first seen" must not be the wall clock in a test that fixes `now`.
    ep = Episode(podcast=podcast, guid=guid, published_at=published, created_at=published, status=EpisodeStatus.READY)
    session.add(ep)
    session.flush()
    for i in range(n):
        session.add(
            Insight(
                episode_id=ep.id,
                idx=i,
                start=i * 60.0,
                end=i * 60.0 + 20,
                text=f"{guid} claim {i}",
                substance=0.6,
                embedding=encoder.to_blob(axis(topic_axis, 10 + 8 * ep.id + i)),
                embedding_model=encoder.model_name(),
            )
        )
    session.flush()
    return ep


def add_user(session, interests: str) -> User:
    user = User(email=f"{abs(hash(interests))}@example.test", interests=interests, token=f"t{abs(hash(interests))}")
    session.add(user)
    session.flush()
    return user


def test_builds_once_per_day_and_never_repeats(session, fake_encoder) -> None:
    show = Podcast(feed_url="https://example.test/a.xml", title="A")
    add_episode(session, show, "bake-1", NOW - dt.timedelta(days=1), 0, 4)
    add_episode(session, show, "bake-2", NOW - dt.timedelta(days=1, hours=2), 0, 4)
    add_episode(session, show, "cars-1", NOW - dt.timedelta(days=1), 1, 4)
    user = add_user(session, "bread baking")

    brief_id = briefs.build(session, user.id, NOW.date(), now=NOW)
    assert brief_id is not None
    items = session.scalars(select(BriefItem).where(BriefItem.brief_id == brief_id)).all()
    assert 1 <= len(items) <= 5
    assert all("bake" in it.insight.text for it in items)
    assert all('"bread baking"' in it.why for it in items)
    assert briefs.build(session, user.id, NOW.date(), now=NOW) == brief_id  # same day: same brief

    # Next day: one new baking episode; nothing sent yesterday comes back.
    later = NOW + dt.timedelta(days=1)
    add_episode(session, show, "bake-3", later - dt.timedelta(hours=3), 0, 3)
    second = briefs.build(session, user.id, later.date(), now=later)
    assert second is not None and second != brief_id, user.last_skip_reason
    sent_before = {it.insight_id for it in items}
    again = session.scalars(select(BriefItem).where(BriefItem.brief_id == second)).all()
    assert again and not sent_before & {it.insight_id for it in again}


def test_nothing_new_means_no_brief_and_a_reason(session, fake_encoder) -> None:
    show = Podcast(feed_url="https://example.test/b.xml", title="B")
    add_episode(session, show, "old", NOW - dt.timedelta(days=30), 0, 3)  # outside the first-brief window
    user = add_user(session, "bread")
    assert briefs.build(session, user.id, NOW.date(), now=NOW) is None
    assert user.last_skip_reason and "no new insights" in user.last_skip_reason
    assert session.scalars(select(Brief)).all() == []


def test_off_topic_catalogue_gives_no_brief(session, fake_encoder) -> None:
    show = Podcast(feed_url="https://example.test/c.xml", title="C")
    add_episode(session, show, "cars", NOW - dt.timedelta(hours=5), 5, 3)  # matches neither axis 0 nor 1
    user = add_user(session, "bread")
    assert briefs.build(session, user.id, NOW.date(), now=NOW) is None
    assert user.last_skip_reason and "matched" in user.last_skip_reason


def test_losing_the_race_returns_the_winners_brief(session, fake_encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    show = Podcast(feed_url="https://example.test/d.xml", title="D")
    add_episode(session, show, "bake", NOW - dt.timedelta(hours=5), 0, 3)
    user = add_user(session, "bread")
    winner = Brief(user_id=user.id, local_date=NOW.date(), created_at=NOW)  # another worker's brief
    session.add(winner)
    session.flush()
    real = briefs._existing
    calls = {"n": 0}

    def stale_first(*args: object) -> int | None:
        # The first look happens "before the other worker committed": it sees nothing.
        calls["n"] += 1
        return None if calls["n"] == 1 else real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(briefs, "_existing", stale_first)
    assert briefs.build(session, user.id, NOW.date(), now=NOW) == winner.id
    assert session.get(Brief, winner.id) is not None  # the savepoint rolled back only our insert
    assert session.scalars(select(BriefItem)).all() == []
