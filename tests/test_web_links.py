"""Unsubscribe (RFC 8058), feedback links, brief/insight pages and the personal RSS / JSON feeds."""

from __future__ import annotations

import json

import feedparser
from sqlalchemy import select

from app.db import session_scope
from app.models import Feedback, Insight, User
from app.pipeline import mail
from tests.test_mail_support import Queue, make_brief, make_catalogue, make_user

# Fixtures (site_client, enqueued, mail_sink) live in the support module.
pytest_plugins = ["tests.test_mail_support"]


def _setup() -> tuple[int, str, list[int]]:
    with session_scope() as s:
        user = make_user(s)
        insights = make_catalogue(s)
        make_brief(s, user, insights)
        return user.id, user.token, [i.id for i in insights]


def test_unsubscribe_get_does_not_post_does(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, secret, _ = _setup()
    r = site_client.get(f"/unsubscribe/{secret}")
    assert r.status_code == 200 and "<form" in r.text and 'method="post"' in r.text
    with session_scope() as s:
        assert s.get_one(User, uid).unsubscribed_at is None
    site_client.cookies.clear()
    r = site_client.post(
        f"/unsubscribe/{secret}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and not r.is_redirect and "set-cookie" not in r.headers
    with session_scope() as s:
        first = s.get_one(User, uid).unsubscribed_at
        assert first is not None
    assert site_client.post(f"/unsubscribe/{secret}").status_code == 200  # replay: harmless
    with session_scope() as s:
        assert s.get_one(User, uid).unsubscribed_at == first
    tampered = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    assert site_client.post(f"/unsubscribe/{tampered}").status_code == 404


def test_feedback_get_confirms_post_records(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, _secret, ids = _setup()
    with session_scope() as s:
        url = mail.feedback_url(s.get_one(User, uid), ids[1], "less_show")
    path = "/feedback/" + url.split("/feedback/", 1)[1]
    r = site_client.get(path)
    assert r.status_code == 200 and "Less from this show" in r.text and 'method="post"' in r.text
    with session_scope() as s:
        assert s.scalars(select(Feedback)).all() == []
    assert site_client.post(path).status_code == 200
    assert site_client.post(path).status_code == 200  # double click: one vote
    with session_scope() as s:
        [fb] = s.scalars(select(Feedback)).all()
        assert (fb.user_id, fb.insight_id, fb.kind) == (uid, ids[1], "less_show")
    assert site_client.post(path[:-3] + "xyz").status_code == 400


def test_personal_feeds_parse(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    _uid, secret, ids = _setup()
    rss = site_client.get(f"/u/{secret}/feed.rss")
    assert rss.status_code == 200 and "rss" in rss.headers["content-type"]
    parsed = feedparser.parse(rss.content)
    assert not parsed.bozo, parsed.bozo_exception
    assert len(parsed.entries) == 5
    assert parsed.entries[0].link.endswith(f"/insights/{ids[0]}")
    assert "Why you got this" in parsed.entries[0].summary
    jf = site_client.get(f"/u/{secret}/feed.json")
    doc = json.loads(jf.text)
    assert doc["version"] == "https://jsonfeed.org/version/1.1" and len(doc["items"]) == 5
    assert doc["items"][0]["external_url"].endswith("#t=61")
    assert len({item["id"] for item in doc["items"]}) == 5
    assert site_client.get("/u/not-a-token/feed.rss").status_code == 404


def test_brief_archive_and_insight_pages(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    _uid, secret, ids = _setup()
    archive = site_client.get(f"/u/{secret}/briefs")
    assert archive.status_code == 200 and "2026-11-26" in archive.text
    page = site_client.get(f"/u/{secret}/briefs/2026-11-26")
    assert page.status_code == 200 and page.text.count("Why you got this") == 5
    assert "/feedback/" in page.text and "#t=61" in page.text
    assert site_client.get(f"/u/{secret}/briefs/2020-01-01").status_code == 404
    r = site_client.get(f"/insights/{ids[0]}")
    assert r.status_code == 200 and "Related insights" in r.text and "https://cdn.example/0.mp3#t=61" in r.text
    # Neighbours come from the embeddings: the even-numbered insights share a topic direction.
    with session_scope() as s:
        from app.web.site_briefs import related

        rel = related(s, s.get_one(Insight, ids[0]), k=3)
        assert len(rel) == 3 and all(ins.idx % 2 == 0 for ins, _ in rel)
        assert [score for _, score in rel] == sorted((score for _, score in rel), reverse=True)
    assert site_client.get("/insights/999999").status_code == 404


def test_todays_brief_page_waits_for_the_build(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    from app.web.site_common import local_today

    with session_scope() as s:
        user = make_user(s, email="fresh@example.com")
        secret, today = user.token, local_today(user)
    r = site_client.get(f"/u/{secret}/briefs/{today.isoformat()}")
    assert r.status_code == 200 and 'http-equiv="refresh"' in r.text and "being put together" in r.text
