"""Ranking behaviours on hand-made vectors: relevance, novelty, collapse, diversity, feedback, follows."""

from __future__ import annotations

import numpy as np
import pytest

from app.pipeline.ranking import Catalogue, Profile, interest_phrases, rank_users

D = 16


def unit(*hot: int, noise: int = 0) -> np.ndarray:
    """A unit vector along the given axes, plus a small private component so vectors are not identical."""
    v = np.zeros(D, dtype=np.float32)
    for h in hot:
        v[h] = 1.0
    if noise:
        v[8 + noise % 8] = 0.7  # different noise axes: cosine ~0.67-0.8, well below the near-duplicate line
    return v / np.linalg.norm(v)


def catalogue(specs: list[tuple[np.ndarray, int, int, float]]) -> Catalogue:
    """specs: (vector, episode, podcast, start second) per insight; passages last 10 s."""
    n = len(specs)
    start = np.array([s[3] for s in specs], dtype=np.float32)
    return Catalogue(
        ids=np.arange(100, 100 + n, dtype=np.int64),
        vecs=np.stack([s[0] for s in specs]).astype(np.float32),
        episode=np.array([s[1] for s in specs], dtype=np.int64),
        podcast=np.array([s[2] for s in specs], dtype=np.int64),
        substance=np.full(n, 0.6, dtype=np.float32),
        age_days=np.zeros(n, dtype=np.float32),
        start=start,
        end=start + 10.0,
    )


def profile(*axes: int, **kw: object) -> Profile:
    return Profile(phrases=[f"topic {a}" for a in axes], phrase_vecs=np.stack([unit(a) for a in axes]), **kw)  # type: ignore[arg-type]


def test_interest_phrases_split_lists_and_joined_wishes() -> None:
    assert interest_phrases("index funds, retirement, taxes")[1:] == ["index funds", "retirement", "taxes"]
    got = interest_phrases("how sourdough rises and what makes a crust crackle")
    assert got[1:] == ["how sourdough rises", "what makes a crust crackle"]
    assert interest_phrases("I like the ocean and ships")[1:] == ["the ocean and ships"]  # one-word sides stay
    assert interest_phrases("birds; plus volcanoes") == ["birds; plus volcanoes", "birds", "volcanoes"]
    assert interest_phrases("   ") == []


def test_relevant_items_first_and_irrelevant_never() -> None:
    cat = catalogue(
        [(unit(0, noise=i + 1), 1, 1, i * 60.0) for i in range(3)]
        + [(unit(1, noise=i + 1), 2, 2, i * 60.0) for i in range(3)]
    )
    [items] = rank_users(cat, [profile(1)])
    assert items and all(cat.episode[it.row] == 2 for it in items)
    assert "topic 1" in items[0].why


def test_already_sent_and_near_duplicates_of_sent_are_excluded() -> None:
    cat = catalogue([(unit(0, noise=1), 1, 1, 0.0), (unit(0, noise=2), 2, 2, 0.0), (unit(0, 3, noise=3), 3, 3, 0.0)])
    past = Profile(
        phrases=["topic 0"],
        phrase_vecs=unit(0)[None, :],
        past_ids=frozenset({100}),
        past_vecs=unit(0, noise=2)[None, :] * 0.999,
    )  # same idea, another episode
    [items] = rank_users(cat, [past])
    ids = {it.insight_id for it in items}
    assert 100 not in ids  # sent before
    assert 101 not in ids  # a near-duplicate (cosine ~0.99) of what was sent
    assert 102 in ids


def test_same_idea_on_several_shows_collapses_into_one_item() -> None:
    cat = catalogue(
        [
            (unit(0, noise=1), 1, 1, 0.0),
            (unit(0, noise=1), 2, 2, 0.0),
            (unit(0, noise=1), 3, 3, 0.0),
            (unit(0, 2, noise=4), 4, 4, 0.0),
        ]
    )
    [items] = rank_users(cat, [profile(0)])
    assert items[0].shows_count == 3
    assert "3 shows" in items[0].why
    assert len(items) == 2


def test_adjacent_passage_of_one_episode_comes_last() -> None:
    # Two passages back to back (a long turn cut in two) and one a minute later, all equally on topic:
    # the continuation of a chosen passage is only taken when nothing else is left.
    cat = catalogue(
        [(unit(0, 1, noise=1), 1, 1, 0.0), (unit(0, 2, noise=2), 1, 1, 10.5), (unit(0, 3, noise=3), 1, 1, 80.0)]
    )
    [items] = rank_users(cat, [profile(0)], k=2)
    starts = sorted(float(cat.start[it.row]) for it in items)
    assert len(items) == 2 and starts[1] - starts[0] > 20


def test_contiguous_half_of_an_answer_comes_after_weaker_passages_but_is_not_excluded() -> None:
    # A (0-10 s) and B (10-20 s, no pause: the other half of one long answer) are on topic; C, on another
    # show, is clearly less so. Second item: C, not B. With only A and B, both are sent (a monologue's
    # distinct points abut too).
    a, b = (unit(0, 1, noise=1), 1, 1, 0.0), (unit(0, 1, noise=2), 1, 1, 10.0)
    c = (unit(0, 1, 5, noise=3), 2, 2, 0.0)  # an extra off-topic axis: less relevant than A and B
    cat = catalogue([a, b, c])
    [items] = rank_users(cat, [profile(0)], k=2)
    assert [int(cat.episode[it.row]) for it in items] == [1, 2]
    [items] = rank_users(catalogue([a, b]), [profile(0)], k=2)
    assert len(items) == 2


def test_diversity_caps_an_episode_when_others_are_as_relevant() -> None:
    specs = [(unit(0, 1, noise=i + 1), 1, 1, i * 60.0) for i in range(5)]
    specs += [(unit(0, 2, noise=i + 1), 2, 2, i * 60.0) for i in range(5)]
    specs += [(unit(0, 3, noise=i + 1), 3, 3, i * 60.0) for i in range(5)]
    [items] = rank_users(catalogue(specs), [profile(0)])
    per_episode = np.bincount([int(catalogue(specs).episode[it.row]) for it in items])
    assert len(items) == 5 and per_episode.max() <= 2


def test_diversity_still_fills_from_one_episode_when_nothing_else_matches() -> None:
    specs = [(unit(0, noise=i + 1), 1, 1, i * 60.0) for i in range(5)]
    specs += [(unit(5, noise=i + 1), 2, 2, i * 60.0) for i in range(5)]
    [items] = rank_users(catalogue(specs), [profile(0)])
    assert len(items) == 5 and {int(catalogue(specs).episode[it.row]) for it in items} == {1}


@pytest.mark.parametrize("kind", ["less_show", "less", "more", "follow"])
def test_feedback_and_follows_move_tomorrows_ranking(kind: str) -> None:
    # Two shows with equally relevant insights; show 1 wins ties by order, feedback must flip or keep it.
    specs = [(unit(0, 1, noise=1), 1, 1, 0.0), (unit(0, 2, noise=2), 2, 2, 0.0)]
    cat = catalogue(specs)
    base = rank_users(cat, [profile(0)], k=1)[0][0]
    other = 1 - base.row
    kwargs: dict[str, object] = {
        "less_show": {"less_shows": frozenset({int(cat.podcast[base.row])})},
        "less": {"less_vecs": cat.vecs[base.row][None, :]},
        "more": {"more_vecs": cat.vecs[other][None, :]},
        "follow": {"followed": frozenset({int(cat.podcast[other])})},
    }[kind]
    [items] = rank_users(cat, [profile(0, **kwargs)], k=1)
    assert items[0].row == other
    if kind == "follow":
        assert "show you follow" in items[0].why


def test_bulk_matches_one_by_one() -> None:
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((60, D)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    specs = [(vecs[i], i // 5, i // 10, (i % 5) * 60.0) for i in range(60)]
    cat = catalogue(specs)
    profs = [Profile(phrases=["a", "b"], phrase_vecs=vecs[[i, i + 7]]) for i in range(20)]
    together = rank_users(cat, profs, chunk=7)
    alone = [rank_users(cat, [p])[0] for p in profs]
    assert [[i.insight_id for i in b] for b in together] == [[i.insight_id for i in b] for b in alone]


def test_user_without_interests_gets_nothing() -> None:
    cat = catalogue([(unit(0), 1, 1, 0.0)])
    assert rank_users(cat, [Profile(phrases=[], phrase_vecs=np.zeros((0, D), dtype=np.float32))]) == [[]]
