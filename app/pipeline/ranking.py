"""Per-user ranking of candidate insights: a pure library on numpy arrays (no rows of its own).

Input: a Catalogue (candidate insights as arrays: unit embeddings, episode/show ids, substance, age) and one
Profile per user (interest phrases embedded, followed shows, feedback, past brief items). Output: per user an
ordered list of Items (catalogue row, score, shows_count, a one-line "why").

How a score is made, and why:
- relevance: users type interests as a list ("index funds, retirement, taxes") or a sentence joining two wishes;
  each piece is embedded as its own phrase and an insight takes its best phrase (max), so one strong match is
  not diluted by the other wishes. An insight rarely repeats the user's words ("placing a checkpoint every
  sqrt(L) layers" for "how big models get trained"), but the episode around it is on topic, so relevance
  blends the insight's own similarity with that of its episode's centroid.
- substance (from extraction), a small recency bonus, followed shows up, feedback ("more" pulls similar items
  up, "less" pushes similar items down, "less_show" pushes a show down).
- selection is greedy: never an insight the user already got nor a near-duplicate of one (cosine), the same
  idea said on several shows collapses into one item (shows_count), two adjacent passages of one episode are
  one thought, and a soft diversity penalty keeps to about two items per episode and spreads shows, yet still
  fills the brief from one episode when nothing else is relevant.

Bulk: rank_users() scores many users at once with matrix products in chunks and argpartition (shortlisting
episodes by centroid first), so a daily batch of 100k users is a few tens of seconds, not a SQL loop per user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Weights: relevance dominates; the rest breaks ties among relevant items.
W_ITEM = 0.25  # insight's own similarity vs its episode's centroid similarity (1 - W_ITEM)
W_SUBSTANCE = 0.25
W_RECENCY = 0.04
RECENCY_DAYS = 7.0
W_FOLLOW = 0.06
W_MORE = 0.15
W_LESS = 0.25
W_LESS_SHOW = 0.3
REL_FLOOR = 0.15  # below this an insight is not about anything the user asked for
WEAK_TIER_BASE = 0.3
TIER_MARGIN = 0.1  # items this close to the user's best match are "as relevant": diversity applies among them
NEAR_DUP = 0.85  # cosine at which two passages say the same thing
SAME_EPISODE_DUP = 0.95  # within one episode only a near-verbatim repeat is the same thing
PENALTY_EPISODE_STEP = 0.03  # per item already chosen from the same episode
PENALTY_EPISODE_CAP = 0.15  # once two items come from one episode
PENALTY_SHOW = 0.04  # per item already chosen from the same show
ADJACENT_SECONDS = 5.0  # a rhetorical question inside an answer leaves a few seconds between its halves
PENALTY_ADJACENT = 0.1
CONTIGUOUS_SECONDS = 0.5
PENALTY_CONTIGUOUS = 0.3
SHORTLIST_EPISODES = 6
MAX_PER_EPISODE = 16
POOL = 12  # candidates per user kept for the greedy pass

# Strong separators between wishes; "and" only separates when both sides are phrases of their own.
_SPLIT = re.compile(r"\s*(?:[,;/]|\bas well as\b|\bplus\b|&)\s*", re.IGNORECASE)
_AND = re.compile(r"\s+(?:and|or)\s+", re.IGNORECASE)
_LEAD = re.compile(
    r"^(?:i(?:'m| am)? (?:really )?(?:like|love|want|enjoy|care about|interested in)|"
    r"stuff (?:about|on)|things (?:about|on)|anything (?:about|on)|mostly|also|especially|"
    r"and|or|plus)\s+",
    re.IGNORECASE,
)


def _strip_lead(p: str) -> str:
    p = p.strip(" .!?")
    while True:
        q = _LEAD.sub("", p)
        if q == p:
            return p
        p = q


def interest_phrases(text: str) -> list[str]:
    """Split free-text interests into phrases, whole text first.

    Commas, semicolons, "plus" and "as well as" separate wishes; "and" separates only when both sides have two
    words or more ("how memory and learning work" stays one phrase, "how models get trained and what they run on"
    becomes two). The whole text stays as a phrase so wishes that only make sense together still count.
    """
    text = " ".join(text.split())
    if not text:
        return []
    pieces: list[str] = []
    for raw in _SPLIT.split(text):
        part = _strip_lead(raw)
        if not part:
            continue
        sides = [_strip_lead(x) for x in _AND.split(part)]
        if len(sides) > 1 and all(len(x.split()) >= 3 for x in sides):
            pieces.extend(sides)
        else:
            pieces.append(part)
    phrases = [text.strip(" .")]
    for p in pieces:
        if p and p.lower() not in {x.lower() for x in phrases}:
            phrases.append(p)
    return phrases


@dataclass(frozen=True)
class Catalogue:
    """Candidate insights, row i = one insight. vecs are unit rows (cosine = dot product)."""

    ids: np.ndarray  # int64 (M,)
    vecs: np.ndarray  # float32 (M, D)
    episode: np.ndarray  # int64 (M,)
    podcast: np.ndarray  # int64 (M,)
    substance: np.ndarray  # float32 (M,)
    age_days: np.ndarray  # float32 (M,)
    start: np.ndarray  # float32 (M,) seconds
    end: np.ndarray  # float32 (M,) seconds

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class Profile:
    phrases: list[str]
    phrase_vecs: np.ndarray  # float32 (P, D)
    followed: frozenset[int] = frozenset()
    less_shows: frozenset[int] = frozenset()
    more_vecs: np.ndarray | None = None  # insights the user asked more of
    less_vecs: np.ndarray | None = None  # insights the user asked less of
    past_vecs: np.ndarray | None = None  # insights already sent
    past_ids: frozenset[int] = field(default_factory=frozenset)


@dataclass
class Item:
    row: int
    insight_id: int
    podcast: int
    score: float
    relevance: float
    phrase: str
    shows: set[int]
    why: str = ""

    @property
    def shows_count(self) -> int:
        return len(self.shows)


def _episode_groups(cat: Catalogue) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode centroids (E, D), each row's episode index (M,), and a padded (E, L) table of rows (-1 = pad)."""
    uniq, inv = np.unique(cat.episode, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(cat.vecs[order], starts, axis=0) if len(order) else np.zeros((0, cat.vecs.shape[1]))
    cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    width = int(min(MAX_PER_EPISODE, counts.max() if len(counts) else 1))
    table = np.full((len(uniq), width), -1, dtype=np.int64)
    for e in range(len(uniq)):
        rows = order[starts[e] : starts[e] + counts[e]]
        if len(rows) > width:  # very long episodes: keep the most substantial passages
            rows = rows[np.argsort(-cat.substance[rows], kind="stable")[:width]]
        table[e, : len(rows)] = rows
    return cent.astype(np.float32), inv, table


def _top_k(a: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values of each row (unordered); k is small (a shortlist).

    Repeated argmax touches each row k times but streams memory; argpartition on wide rows is slower here.
    """
    if k >= a.shape[1]:
        return np.broadcast_to(np.arange(a.shape[1]), (a.shape[0], a.shape[1])).copy()
    work = a.copy()
    rows = np.arange(a.shape[0])
    out = np.empty((a.shape[0], k), dtype=np.int64)
    for j in range(k):
        out[:, j] = work.argmax(axis=1)
        work[rows, out[:, j]] = -np.inf
    return out


def _reduction(cent: np.ndarray, *, min_episodes: int = 2048, dims: int = 128) -> np.ndarray | None:
    """A (D, dims) PCA basis of the episode centroids for the approximate shortlist; None for small catalogues."""
    if cent.shape[0] < min_episodes or cent.shape[1] <= dims:
        return None
    centered = cent - cent.mean(axis=0, keepdims=True)
    # Eigenvectors of the D x D covariance: far cheaper than an SVD of the E x D matrix. Single-threaded: a
    # 384 x 384 problem gains nothing from threads and multi-threaded LAPACK stalls badly on a busy machine.
    cov = (centered.T @ centered).astype(np.float64)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - ships with scikit-learn, a sentence-transformers dependency
        _, vecs = np.linalg.eigh(cov)
    else:
        with threadpool_limits(limits=1):
            _, vecs = np.linalg.eigh(cov)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims].astype(np.float32))


def _pad_phrases(profiles: Sequence[Profile], dim: int) -> tuple[np.ndarray, np.ndarray]:
    pmax = max(1, max((p.phrase_vecs.shape[0] for p in profiles), default=1))
    q = np.zeros((len(profiles), pmax, dim), dtype=np.float32)
    valid = np.zeros((len(profiles), pmax), dtype=bool)
    for u, p in enumerate(profiles):
        n = p.phrase_vecs.shape[0]
        q[u, :n] = p.phrase_vecs
        # A user without phrases keeps one zero "phrase": similarity 0 is below the floor, so no items.
        valid[u, : max(1, n)] = True
    return q, valid


def rank_users(cat: Catalogue, profiles: Sequence[Profile], *, k: int = 5, chunk: int = 2048) -> list[list[Item]]:
    """Each profile's brief (up to k items) from the catalogue."""
    if len(cat) == 0 or not profiles:
        return [[] for _ in profiles]
    cent, _, table = _episode_groups(cat)
    base = (W_SUBSTANCE * cat.substance + W_RECENCY * np.exp(-np.maximum(cat.age_days, 0) / RECENCY_DAYS)).astype(
        np.float32
    )
    n_short = min(SHORTLIST_EPISODES, cent.shape[0])
    dim = cat.vecs.shape[1]
    basis = _reduction(cent)
    cent_r = cent @ basis if basis is not None else cent
    results: list[list[Item]] = []
    for lo in range(0, len(profiles), chunk):
        part = profiles[lo : lo + chunk]
        n_users = len(part)
        q, valid = _pad_phrases(part, dim)  # (U, P, D)
        # Stage 1: shortlist episodes by centroid similarity (best phrase per user). With many episodes the
        # product runs in a reduced space on a wider shortlist, which is then re-scored exactly.
        wide = min(cent.shape[0], n_short * 3) if basis is not None else n_short
        q_r = (q.reshape(-1, dim) @ basis) if basis is not None else q.reshape(-1, dim)
        approx = (q_r @ cent_r.T).reshape(n_users, q.shape[1], -1)  # (U, P, E)
        approx[~valid] = -1.0
        short = _top_k(approx.max(axis=1), wide)
        ep_sim = np.matmul(q, cent[short].transpose(0, 2, 1))  # exact (U, P, S)
        ep_sim[~valid] = -1.0
        if wide > n_short:
            keep = _top_k(ep_sim.max(axis=1), n_short)
            short = np.take_along_axis(short, keep, axis=1)
            ep_sim = np.take_along_axis(ep_sim, keep[:, None, :], axis=2)
        rows = table[short].reshape(n_users, -1)  # (U, C) catalogue rows, -1 = pad
        pad = rows < 0
        safe = np.where(pad, 0, rows)
        # Stage 2: the shortlisted episodes' insights.
        item_sim = np.matmul(cat.vecs[safe], q.transpose(0, 2, 1))  # (U, C, P)
        slot = np.repeat(np.arange(short.shape[1]), table.shape[1])[None, :]  # candidate -> shortlist slot
        cent_sim = np.take_along_axis(ep_sim, np.broadcast_to(slot, safe.shape)[:, None, :], axis=2).transpose(0, 2, 1)
        rel_p = W_ITEM * item_sim + (1 - W_ITEM) * cent_sim
        rel_p[np.broadcast_to(~valid[:, None, :], rel_p.shape)] = -1.0
        best_p = rel_p.argmax(axis=2)
        rel = np.take_along_axis(rel_p, best_p[:, :, None], axis=2)[:, :, 0]
        score = rel + base[safe]
        score[pad | (rel < REL_FLOOR)] = -np.inf
        pool = min(POOL, score.shape[1])
        top = np.argpartition(-score, pool - 1, axis=1)[:, :pool]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(score, top, axis=1), axis=1), axis=1)
        p_rows = np.take_along_axis(safe, top, axis=1)
        p_score = np.take_along_axis(score, top, axis=1)
        p_rel = np.take_along_axis(rel, top, axis=1)
        p_phrase = np.take_along_axis(best_p, top, axis=1)
        pv = cat.vecs[p_rows]
        p_sims = np.matmul(pv, pv.transpose(0, 2, 1))  # (U, K, K) for near-duplicate collapse
        # Python lists for the greedy pass, converted once per chunk (per-user numpy calls cost more).
        lists = _Pool(
            rows=p_rows.tolist(),
            score=p_score.tolist(),
            rel=p_rel.tolist(),
            phrase=p_phrase.tolist(),
            sims=p_sims.tolist(),
            ids=cat.ids[p_rows].tolist(),
            eps=cat.episode[p_rows].tolist(),
            shows=cat.podcast[p_rows].tolist(),
            starts=cat.start[p_rows].tolist(),
            ends=cat.end[p_rows].tolist(),
        )
        for u, prof in enumerate(part):
            if _has_history(prof):
                _apply_history(cat, prof, p_rows[u], lists, u)
            results.append(_select(lists, u, prof, k))
    return results


@dataclass
class _Pool:
    """Per-user candidate pools of one chunk as nested Python lists ([user][candidate])."""

    rows: list[list[int]]
    score: list[list[float]]
    rel: list[list[float]]
    phrase: list[list[int]]
    sims: list[list[list[float]]]
    ids: list[list[int]]
    eps: list[list[int]]
    shows: list[list[int]]
    starts: list[list[float]]
    ends: list[list[float]]


def _apply_history(cat: Catalogue, prof: Profile, rows: np.ndarray, pool: _Pool, u: int) -> None:
    """Feedback and follows move scores; already-sent insights and near-duplicates of them drop out."""
    score = np.asarray(pool.score[u], dtype=np.float32) + _feedback_adjust(cat, prof, rows)
    gone = np.zeros(len(rows), dtype=bool)
    if prof.past_ids:
        gone |= np.isin(cat.ids[rows], list(prof.past_ids))
    if prof.past_vecs is not None and len(prof.past_vecs):
        gone |= (cat.vecs[rows] @ prof.past_vecs.T).max(axis=1) >= NEAR_DUP
    score[gone] = -np.inf
    pool.score[u] = score.tolist()


def _feedback_adjust(cat: Catalogue, prof: Profile, rows: np.ndarray) -> np.ndarray:
    adj = np.zeros(len(rows), dtype=np.float32)
    if prof.followed:
        adj += W_FOLLOW * np.isin(cat.podcast[rows], list(prof.followed))
    if prof.less_shows:
        adj -= W_LESS_SHOW * np.isin(cat.podcast[rows], list(prof.less_shows))
    if prof.more_vecs is not None and len(prof.more_vecs):
        adj += W_MORE * np.maximum(0.0, (cat.vecs[rows] @ prof.more_vecs.T).max(axis=1))
    if prof.less_vecs is not None and len(prof.less_vecs):
        adj -= W_LESS * np.maximum(0.0, (cat.vecs[rows] @ prof.less_vecs.T).max(axis=1))
    return adj


def _has_history(prof: Profile) -> bool:
    return bool(
        prof.followed
        or prof.less_shows
        or prof.past_ids
        or (prof.more_vecs is not None and len(prof.more_vecs))
        or (prof.less_vecs is not None and len(prof.less_vecs))
        or (prof.past_vecs is not None and len(prof.past_vecs))
    )


def _select(pool: _Pool, u: int, prof: Profile, k: int) -> list[Item]:
    """Greedy pick of up to k items: novelty, collapse, one thought per passage pair, tiered diversity.

    Plain Python over a small pool (POOL candidates): per-call numpy overhead would dominate at 100k users.
    """
    sc, rl, sim = pool.score[u], pool.rel[u], pool.sims[u]
    eps, shows, starts, ends = pool.eps[u], pool.shows[u], pool.starts[u], pool.ends[u]
    n = len(sc)
    alive = [x > -1e30 for x in sc]  # -inf: padding, below the floor, or already sent
    if not any(alive):
        return []
    best_rel = max(r for r, a in zip(rl, alive, strict=True) if a)
    # Diversity may reorder items that are about equally relevant, never promote a clearly weaker match over
    # a strong one: the strong tier is exhausted first. Within the weak tier relevance leads (substance and
    # recency count WEAK_TIER_BASE as much): a weak match must not lose to a weaker one for being newer.
    strong = [r >= best_rel - TIER_MARGIN for r in rl]
    penalty = [0.0] * n
    weak = [0.0] * n  # the part of the penalty that also applies in the weak tier
    per_episode: dict[int, int] = {}
    chosen: list[Item] = []
    while len(chosen) < k:
        bi, best = -1, -1e30
        for j in range(n):
            if alive[j]:
                eff = sc[j] - penalty[j] if strong[j] else rl[j] + WEAK_TIER_BASE * (sc[j] - rl[j]) - weak[j] - 10.0
                if eff > best:
                    bi, best = j, eff
        if bi < 0:
            break
        alive[bi] = False
        e, show = eps[bi], shows[bi]
        p_idx = pool.phrase[u][bi]
        item = Item(
            row=pool.rows[u][bi],
            insight_id=pool.ids[u][bi],
            podcast=show,
            score=sc[bi] - penalty[bi] if strong[bi] else rl[bi] + WEAK_TIER_BASE * (sc[bi] - rl[bi]) - weak[bi],
            relevance=rl[bi],
            phrase=prof.phrases[p_idx] if p_idx < len(prof.phrases) else "",
            shows={show},
        )
        per_episode[e] = per_episode.get(e, 0) + 1
        step = PENALTY_EPISODE_STEP + (PENALTY_EPISODE_CAP if per_episode[e] == 2 else 0.0)
        row_sim = sim[bi]
        for j in range(n):
            if not alive[j]:
                continue
            # The same idea said in another episode (any show) collapses into this item. Within one episode
            # passages on one subject are often this close yet say different things: only a repeat collapses.
            if row_sim[j] >= (NEAR_DUP if eps[j] != e else SAME_EPISODE_DUP):
                item.shows.add(shows[j])
                alive[j] = False
            elif eps[j] == e:
                # The passage right before/after it may continue the same thought, or (ASR text, where answers
                # follow each other without a gap) be the next answer: moved to the weak tier with a small
                # penalty, not ruled out. Extraction already keeps one passage per speaker turn.
                gap = min(abs(starts[j] - ends[bi]), abs(starts[bi] - ends[j]))
                if gap <= ADJACENT_SECONDS:
                    strong[j] = False  # competes only once the clearly distinct strong items are gone
                    # With no pause at all it is most likely the other half of one long answer: taken last of
                    # all, after weaker passages of the episode (it is not excluded: in a monologue distinct
                    # points follow each other with no gap either).
                    weak[j] += PENALTY_CONTIGUOUS if gap <= CONTIGUOUS_SECONDS else PENALTY_ADJACENT
                penalty[j] += step
            if shows[j] == show:
                penalty[j] += PENALTY_SHOW
        item.why = why_line(item, prof)
        chosen.append(item)
    return chosen


def why_line(item: Item, prof: Profile) -> str:
    parts = [f'Matches your interest "{item.phrase}"' if item.phrase else "Picked for you"]
    if item.podcast in prof.followed:
        parts.append("from a show you follow")
    if item.shows_count > 1:
        parts.append(f"said on {item.shows_count} shows")
    return "; ".join(parts) + "."
