"""Read-only pages: a user's brief archive and briefs, insight pages with related insights, personal feeds.

Personal pages are addressed by the opaque User.token (unguessable, no login), like the unsubscribe link.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from app.db import session_scope
from app.models import Brief, BriefItem, Episode, Insight, User
from app.pipeline import mail
from app.web import site_feeds
from app.web.site_common import SECURITY_HEADERS, local_today, message, page, user_by_secret

router = APIRouter(include_in_schema=False)

RELATED_POOL = 20000  # newest embedded insights searched for neighbours: 30 MB of float32, ~2 ms a query
RELATED_COUNT = 5
# Below this cosine similarity a MiniLM neighbour is noise, not "related": show fewer rather than junk.
RELATED_MIN_SCORE = 0.2
FEED_ITEMS = 50


@dataclass(frozen=True)
class _Index:
    key: tuple[str, int, int]
    ids: np.ndarray
    episodes: np.ndarray
    matrix: np.ndarray


_index: _Index | None = None
_index_lock = threading.Lock()


def _embedding_index(session: Session) -> _Index | None:
    """The newest RELATED_POOL embeddings as one matrix, rebuilt only when insights were added or removed
    (checked with one cheap count/max query), so a page view is a single matrix-vector product."""
    global _index
    count, max_id = session.execute(
        select(func.count(Insight.id), func.coalesce(func.max(Insight.id), 0)).where(Insight.embedding.is_not(None))
    ).one()
    # The database URL is part of the key: one process may serve several databases (tests, CLI eval).
    key = (str(session.get_bind().engine.url), int(count), int(max_id))
    with _index_lock:
        if _index is not None and _index.key == key:
            return _index
    from app.ml.encoder import from_blob  # numpy-only helpers; the model itself is never loaded here

    rows = session.execute(
        select(Insight.id, Insight.episode_id, Insight.embedding)
        .where(Insight.embedding.is_not(None))
        .order_by(Insight.id.desc())
        .limit(RELATED_POOL)
    ).all()
    dim = max((len(r.embedding) for r in rows), default=0)
    rows = [r for r in rows if r.embedding is not None and len(r.embedding) == dim]
    if not rows:
        return None
    built = _Index(
        key=key,
        ids=np.array([r.id for r in rows]),
        episodes=np.array([r.episode_id for r in rows]),
        matrix=np.vstack([from_blob(r.embedding) for r in rows]),
    )
    with _index_lock:
        _index = built
    return built


def related(session: Session, insight: Insight, *, k: int = RELATED_COUNT) -> list[tuple[Insight, float]]:
    """Nearest neighbours by cosine similarity of the stored unit-length embeddings (other episodes first)."""
    if insight.embedding is None:
        return []
    from app.ml.encoder import from_blob

    index = _embedding_index(session)
    query = from_blob(insight.embedding)
    if index is None or index.matrix.shape[1] != query.shape[0]:
        return []
    scores = index.matrix @ query
    scores[index.ids == insight.id] = -np.inf  # never itself
    # The same episode's neighbours are usually its own context: prefer other episodes.
    same = index.episodes == insight.episode_id
    order = [i for i in np.lexsort((-scores, same))[: k + 1] if scores[i] >= RELATED_MIN_SCORE][:k]
    ids = [int(index.ids[i]) for i in order]
    found = {
        i.id: i
        for i in session.scalars(
            select(Insight).where(Insight.id.in_(ids)).options(joinedload(Insight.episode).joinedload(Episode.podcast))
        )
    }
    return [(found[int(index.ids[i])], float(scores[i])) for i in order if int(index.ids[i]) in found]


@router.get("/insights/{insight_id}", response_class=HTMLResponse)
def insight_page(request: Request, insight_id: int) -> HTMLResponse:
    with session_scope() as session:
        insight = session.get(Insight, insight_id)
        if insight is None:
            return message(request, "Not found", "There's no insight with that number.", status=404)
        episode = insight.episode
        return page(
            request,
            "insight",
            insight=insight,
            episode=episode,
            podcast=episode.podcast,
            moment_url=mail.moment_url(episode, insight.start),
            related=[(i, s, mail.moment_url(i.episode, i.start)) for i, s in related(session, insight)],
        )


@router.get("/u/{secret}/briefs", response_class=HTMLResponse)
def archive(request: Request, secret: str) -> HTMLResponse:
    with session_scope() as session:
        user = user_by_secret(session, secret)
        if user is None:
            return message(request, "Not found", "This archive link isn't valid.", status=404)
        briefs = session.scalars(
            select(Brief).where(Brief.user_id == user.id).order_by(Brief.local_date.desc()).limit(365)
        ).all()
        return page(request, "archive", user=user, briefs=briefs, secret=secret)


@router.get("/u/{secret}/briefs/{day}", response_class=HTMLResponse)
def brief_page(request: Request, secret: str, day: str) -> HTMLResponse:
    with session_scope() as session:
        user = user_by_secret(session, secret)
        if user is None:
            return message(request, "Not found", "This brief link isn't valid.", status=404)
        try:
            local_date = dt.date.fromisoformat(day)
        except ValueError:
            return message(request, "Not found", "That isn't a date.", status=404)
        brief = session.scalar(select(Brief).where(Brief.user_id == user.id, Brief.local_date == local_date))
        pending = brief is None and local_date == local_today(user) and user.active
        items = mail.brief_items(session, brief, user) if brief is not None else []
        return page(
            request,
            "brief",
            status=200 if brief is not None or pending else 404,
            user=user,
            secret=secret,
            brief=brief,
            items=items,
            local_date=local_date,
            pending=pending,
            skip_reason=user.last_skip_reason,
        )


def _entries(session: Session, user: User) -> list[site_feeds.FeedEntry]:
    rows = session.scalars(
        select(BriefItem)
        .join(Brief)
        .where(Brief.user_id == user.id)
        .options(
            joinedload(BriefItem.brief),
            joinedload(BriefItem.insight).joinedload(Insight.episode).joinedload(Episode.podcast),
        )
        .order_by(Brief.local_date.desc(), BriefItem.position)
        .limit(FEED_ITEMS)
    ).all()
    base = mail.base_url()
    entries = []
    for item in rows:
        ins = item.insight
        ep = ins.episode
        title = " ".join(ins.text.split())
        entries.append(
            site_feeds.FeedEntry(
                id=f"{base}/insights/{ins.id}#brief-{item.brief_id}",
                url=f"{base}/insights/{ins.id}",
                title=title if len(title) <= 90 else title[:89].rsplit(" ", 1)[0] + "…",
                text=ins.text,
                published=item.brief.created_at,
                show=ep.podcast.title or ep.podcast.feed_url,
                episode=ep.title,
                moment_url=mail.moment_url(ep, ins.start),
                why=item.why,
            )
        )
    return entries


def _feed(secret: str, kind: str) -> Response:
    with session_scope() as session:
        user = user_by_secret(session, secret)
        if user is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        base = mail.base_url()
        title = "podbrief: your top podcast insights"
        link, self_url = f"{base}/u/{secret}/briefs", f"{base}/u/{secret}/feed.{kind}"
        entries = _entries(session, user)
    headers = {"X-Robots-Tag": "noindex", "X-Content-Type-Options": SECURITY_HEADERS["X-Content-Type-Options"]}
    if kind == "rss":
        body = site_feeds.rss(title=title, link=link, self_url=self_url, entries=entries)
        return Response(body, media_type="application/rss+xml; charset=utf-8", headers=headers)
    body = site_feeds.json_feed(title=title, link=link, self_url=self_url, entries=entries)
    return Response(body, media_type="application/feed+json; charset=utf-8", headers=headers)


@router.get("/u/{secret}/feed.rss")
def feed_rss(secret: str) -> Response:
    return _feed(secret, "rss")


@router.get("/u/{secret}/feed.json")
def feed_json(secret: str) -> Response:
    return _feed(secret, "json")
