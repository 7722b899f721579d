"""Preferences behind the magic link: edits, podcasts, OPML, pause, delete."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Brief, Feedback, Podcast, Subscription, User
from app.pipeline import mail, tokens
from tests.test_mail_support import Queue, make_brief, make_catalogue, make_user

# Fixtures (site_client, enqueued, mail_sink) live in the support module.
pytest_plugins = ["tests.test_mail_support"]


def _setup() -> tuple[int, str, list[int]]:
    with session_scope() as s:
        user = make_user(s)
        insights = make_catalogue(s)
        make_brief(s, user, insights)
        pods = [p.id for p in s.scalars(select(Podcast).order_by(Podcast.id))]
        return user.id, mail.manage_url(user).split("/manage/", 1)[1], pods


def test_edit_preferences(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, tok, pods = _setup()
    r = site_client.get(f"/manage/{tok}")
    assert r.status_code == 200 and "reader@example.com" in r.text and "Show 1 &amp; Friends" in r.text
    assert r.headers["referrer-policy"] == "no-referrer"
    data = {
        "interests": "climate tech",
        "timezone": "America/New_York",
        "delivery_hour": "18",
        "paused": "1",
        "podcasts": [str(pods[0]), str(pods[2])],
    }
    r = site_client.post(f"/manage/{tok}", data=data)
    assert r.status_code == 200 and "paused" in r.text
    with session_scope() as s:
        u = s.get_one(User, uid)
        assert (u.interests, u.timezone, u.delivery_hour, u.paused) == ("climate tech", "America/New_York", 18, True)
        followed = set(s.scalars(select(Subscription.podcast_id).where(Subscription.user_id == uid)))
        assert followed == {pods[0], pods[2]}
    # untick one show, resume
    r = site_client.post(f"/manage/{tok}", data={**data, "paused": "", "podcasts": [str(pods[2])]})
    with session_scope() as s:
        assert s.get_one(User, uid).paused is False
        assert set(s.scalars(select(Subscription.podcast_id).where(Subscription.user_id == uid))) == {pods[2]}


def test_invalid_edit_rerenders_and_changes_nothing(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, tok, _ = _setup()
    r = site_client.post(f"/manage/{tok}", data={"interests": "x", "timezone": "Nowhere/Land", "delivery_hour": "-1"})
    assert r.status_code == 422 and "Nowhere/Land" in r.text and "between 0 and 23" in r.text
    with session_scope() as s:
        assert s.get_one(User, uid).timezone == "Europe/Berlin"


def test_expired_or_foreign_magic_link(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, _tok, _ = _setup()
    with session_scope() as s:
        secret = s.get_one(User, uid).token
    old = tokens.sign("manage", {"u": uid, "f": tokens.fingerprint(secret)}, ttl=10, now=time.time() - 100)
    assert site_client.get(f"/manage/{old}").status_code == 410
    other = tokens.sign("manage", {"u": uid, "f": tokens.fingerprint("someone-else")}, ttl=100)
    assert site_client.get(f"/manage/{other}").status_code == 400


def test_add_feed_enqueues_after_commit(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, tok, _ = _setup()
    bad = site_client.post(f"/manage/{tok}/feeds", data={"feed_url": "file:///etc/passwd"})
    assert bad.status_code == 422 and enqueued.named("subscribe_feed") == []
    r = site_client.post(f"/manage/{tok}/feeds", data={"feed_url": "https://new.example/rss"})
    assert r.status_code == 200
    [(pid,)] = enqueued.named("subscribe_feed")
    with session_scope() as s:  # committed before the enqueue: a worker would see it
        assert s.scalar(select(Subscription.id).where(Subscription.user_id == uid, Subscription.podcast_id == pid))


def test_opml_roundtrip_and_entity_refusal(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    _uid, tok, _ = _setup()
    opml = b"""<?xml version="1.0"?><opml version="2.0"><head/><body>
      <outline text="A" xmlUrl="https://a.example/feed"/><outline text="grp">
      <outline text="B" type="rss" xmlUrl="https://b.example/feed"/></outline>
      <outline text="bad" xmlUrl="ftp://c.example/feed"/></body></opml>"""
    r = site_client.post(f"/manage/{tok}/opml", files={"opml": ("subs.opml", opml, "text/xml")})
    assert r.status_code == 200 and "Imported 2 podcasts" in r.text
    assert len(enqueued.named("subscribe_feed")) == 2
    out = site_client.get(f"/manage/{tok}/opml")
    assert out.status_code == 200 and "attachment" in out.headers["content-disposition"]
    assert 'xmlUrl="https://a.example/feed"' in out.text and 'xmlUrl="https://b.example/feed"' in out.text
    bomb = b'<?xml version="1.0"?><!DOCTYPE o [<!ENTITY a "aaaa">]><opml><body><outline xmlUrl="https://x.example/&a;"/></body></opml>'
    r = site_client.post(f"/manage/{tok}/opml", files={"opml": ("b.opml", bomb, "text/xml")})
    assert r.status_code == 422 and "DOCTYPE" in r.text


def test_delete_account_removes_data(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    uid, tok, pods = _setup()
    with session_scope() as s:
        s.add(Subscription(user_id=uid, podcast_id=pods[0]))
        brief_insight = s.scalars(select(Brief).where(Brief.user_id == uid)).one().items[0].insight_id
        s.add(Feedback(user_id=uid, insight_id=brief_insight, kind="more"))
    assert "Delete your account" in site_client.get(f"/manage/{tok}/delete").text
    assert site_client.post(f"/manage/{tok}/delete", data={}).status_code == 422  # box not ticked
    r = site_client.post(f"/manage/{tok}/delete", data={"confirm": "yes"})
    assert r.status_code == 200 and "deleted" in r.text
    with session_scope() as s:
        assert s.get(User, uid) is None
        for model in (Brief, Subscription, Feedback):
            assert s.scalar(select(func.count()).select_from(model)) == 0
        assert s.scalar(select(func.count()).select_from(Podcast)) == len(pods)  # the catalogue stays
    assert site_client.get(f"/manage/{tok}").status_code == 400  # the link dies with the account


def test_request_link_same_page_either_way(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    _setup()
    known = site_client.post("/manage", data={"email": "reader@example.com"})
    unknown = site_client.post("/manage", data={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("reader@example.com", "X") == unknown.text.replace("nobody@example.com", "X")
    assert len(enqueued.named("send_confirmation")) == 1


def test_api_key_created_and_revoked_on_the_preferences_page(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    import re

    _, tok, _ = _setup()
    r = site_client.post(f"/manage/{tok}/keys", data={"name": "obsidian sync"})
    assert r.status_code == 200
    key = re.search(r'id="new-key">([^<]+)<', r.text)
    assert key, "the new key is shown once"
    headers = {"Authorization": f"Bearer {key.group(1)}"}
    assert site_client.get("/api/v1/me", headers=headers).status_code == 200
    # Shown once: reloading the page lists the key by prefix only.
    page = site_client.get(f"/manage/{tok}").text
    assert key.group(1) not in page and "obsidian sync" in page
    key_id = re.search(r"/keys/(\d+)/revoke", page)
    assert key_id
    assert site_client.post(f"/manage/{tok}/keys/{key_id.group(1)}/revoke").status_code == 200
    assert site_client.get("/api/v1/me", headers=headers).status_code == 401
    # Another user's key id is not revocable from this page.
    assert site_client.post(f"/manage/{tok}/keys/999999/revoke").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/manage/{t}"),
        ("post", "/manage/{t}"),
        ("post", "/manage/{t}/feeds"),
        ("get", "/manage/{t}/opml"),
        ("post", "/manage/{t}/opml"),
        ("get", "/manage/{t}/delete"),
        ("post", "/manage/{t}/delete"),
        ("post", "/manage/{t}/keys"),
        ("post", "/manage/{t}/keys/1/revoke"),
        ("get", "/feedback/{t}"),
        ("post", "/feedback/{t}"),
        ("get", "/confirm/{t}"),
    ],
)
def test_every_signed_link_route_answers_a_forged_link_with_the_bad_link_page(  # type: ignore[no-untyped-def]
    site_client, enqueued: Queue, method: str, path: str
) -> None:
    uid, _tok, _ = _setup()
    forged = tokens.sign("manage", {"u": uid, "f": tokens.fingerprint("someone-else")}, ttl=100)
    r = getattr(site_client, method)(path.format(t=forged))
    assert r.status_code == 400 and "This link doesn" in r.text  # (the apostrophe is HTML-escaped)
    with session_scope() as s:
        user = s.get_one(User, uid)
        assert user.unsubscribed_at is None and user.interests  # nothing was changed
