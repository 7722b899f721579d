"""/api/v1 resources: filters, cursors, ETags, error shape, and every per-user route tried by two users."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from app import db
from app.models import Feedback, Subscription, User
from tests.test_api_support import Api, add_brief, add_episode, api_fixture, make_api  # noqa: F401  (fixture `api`)

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<opml version="2.0"><body><outline xmlUrl="https://a.example.com/&lol2;"/></body></opml>"""


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record first-poll requests instead of talking to a broker."""
    from workers import enqueue

    calls: list[int] = []
    monkeypatch.setattr(enqueue, "subscribe_feed", calls.append)
    return calls


@pytest.mark.pg
def test_insights_filters_and_cursor_pagination(api: Api) -> None:
    api.user("alice")
    _, e1, ids1 = add_episode(
        api.db_url, [f"one {i}" for i in range(5)], published=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    )
    p2, _, ids2 = add_episode(
        api.db_url, [f"two {i}" for i in range(4)], title="Other", published=dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    )
    seen: list[int] = []
    url = "/api/v1/insights?limit=4"
    while url:
        body = api.get("alice", url).json()  # type: ignore[attr-defined]
        seen += [i["id"] for i in body["items"]]
        url = f"/api/v1/insights?limit=4&cursor={body['next_cursor']}" if body["next_cursor"] else ""
    assert seen == sorted(ids1 + ids2, reverse=True)  # newest first, each exactly once
    by_podcast = api.get("alice", f"/api/v1/insights?podcast_id={p2}").json()  # type: ignore[attr-defined]
    assert {i["id"] for i in by_podcast["items"]} == set(ids2)
    by_episode = api.get("alice", f"/api/v1/insights?episode_id={e1}&limit=100").json()  # type: ignore[attr-defined]
    assert {i["id"] for i in by_episode["items"]} == set(ids1)
    march = api.get("alice", "/api/v1/insights?since=2026-02-28&until=2026-03-01").json()  # type: ignore[attr-defined]
    assert {i["id"] for i in march["items"]} == set(ids1)
    item = march["items"][0]
    assert item["published_at"] == "2026-03-01T00:00:00Z"  # ISO 8601, UTC
    r = api.client.get("/api/v1/insights?cursor=garbage", headers=api.h("alice"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = api.client.get("/api/v1/insights?until=0", headers=api.h("alice"))
    assert r.status_code == 422 and r.json()["error"]["detail"][0]["loc"] == ["query", "until"]


def test_semantic_search_ranks_by_meaning_and_sees_new_insights(api: Api) -> None:
    api.user("alice")
    _, _, ids = add_episode(api.db_url, ["sleep improves memory", "interest rates and housing", "coffee and sleep"])
    body = api.get("alice", "/api/v1/insights?q=Sleep  MEMORY").json()  # type: ignore[attr-defined]
    assert [i["id"] for i in body["items"]][:2] == [ids[0], ids[2]]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5
    # Added after the index was loaded: found on the next query (incremental refresh by id).
    _, _, new = add_episode(api.db_url, ["memory memory sleep memory"], title="Later")
    again = api.get("alice", "/api/v1/insights?q=sleep memory").json()  # type: ignore[attr-defined]
    assert again["items"][0]["id"] == new[0]
    only = api.get("alice", f"/api/v1/insights?q=sleep&episode_id={999}").json()  # type: ignore[attr-defined]
    assert only["items"] == []
    page = api.get("alice", "/api/v1/insights?q=sleep&limit=1").json()  # type: ignore[attr-defined]
    nxt = api.get("alice", f"/api/v1/insights?q=sleep&limit=1&cursor={page['next_cursor']}").json()  # type: ignore[attr-defined]
    assert page["items"][0]["id"] != nxt["items"][0]["id"]


def test_insight_with_related_and_feedback(api: Api) -> None:
    api.user("alice")
    api.user("bob")
    _, _, ids = add_episode(api.db_url, ["sleep improves memory", "memory needs sleep", "tax policy"])
    body = api.get("alice", f"/api/v1/insights/{ids[0]}").json()  # type: ignore[attr-defined]
    assert body["text"] == "sleep improves memory"
    assert body["related"][0]["id"] == ids[1] and ids[0] not in [r["id"] for r in body["related"]]
    assert api.client.get("/api/v1/insights/99999", headers=api.h("alice")).status_code == 404
    r = api.client.post(f"/api/v1/insights/{ids[2]}/feedback", json={"kind": "less"}, headers=api.h("alice"))
    assert r.status_code == 201 and r.json()["kind"] == "less"
    bad = api.client.post(f"/api/v1/insights/{ids[2]}/feedback", json={"kind": "meh"}, headers=api.h("alice"))
    assert bad.status_code == 422
    # Feedback belongs to its author only.
    assert len(api.get("alice", "/api/v1/me/feedback").json()["items"]) == 1  # type: ignore[attr-defined]
    assert api.get("bob", "/api/v1/me/feedback").json()["items"] == []  # type: ignore[attr-defined]
    with db.session_scope(api.db_url) as s:
        rows = s.scalars(select(Feedback)).all()
        assert [(f.user_id, f.insight_id, f.kind) for f in rows] == [(api.users["alice"], ids[2], "less")]


@pytest.mark.pg
def test_briefs_are_private_and_today_uses_the_users_time_zone(api: Api) -> None:
    api.user("alice", timezone="Pacific/Kiritimati")  # UTC+14: "today" is often tomorrow in UTC
    api.user("bob")
    _, _, ids = add_episode(api.db_url, ["a", "b", "c"])
    kiritimati = dt.datetime.now(dt.UTC).astimezone(__import__("zoneinfo").ZoneInfo("Pacific/Kiritimati")).date()
    add_brief(api.db_url, api.users["alice"], kiritimati, ids[:2])
    add_brief(api.db_url, api.users["alice"], kiritimati - dt.timedelta(days=1), ids[2:])
    today = api.client.get("/api/v1/briefs/today", headers=api.h("alice"))
    assert today.status_code == 200
    assert today.json()["local_date"] == kiritimati.isoformat()
    assert [i["insight"]["id"] for i in today.json()["items"]] == ids[:2]
    # ETag: same representation -> 304 with no body.
    again = api.client.get("/api/v1/briefs/today", headers=api.h("alice", **{"If-None-Match": today.headers["ETag"]}))
    assert again.status_code == 304 and again.content == b""
    listed = api.get("alice", "/api/v1/briefs?limit=1").json()  # type: ignore[attr-defined]
    assert listed["items"][0]["local_date"] == kiritimati.isoformat() and listed["next_cursor"]
    # Bob sees none of them, by any route.
    assert api.client.get("/api/v1/briefs/today", headers=api.h("bob")).status_code == 404
    assert api.client.get(f"/api/v1/briefs/{kiritimati.isoformat()}", headers=api.h("bob")).status_code == 404
    assert api.get("bob", "/api/v1/briefs").json()["items"] == []  # type: ignore[attr-defined]
    assert api.client.get(f"/api/v1/briefs/{kiritimati.isoformat()}", headers=api.h("alice")).status_code == 200


@pytest.mark.pg
def test_me_get_patch_validates_and_etag_changes(api: Api) -> None:
    api.user("alice")
    api.user("bob")
    first = api.client.get("/api/v1/me", headers=api.h("alice"))
    r = api.client.patch(
        "/api/v1/me",
        json={"interests": "sleep science", "timezone": "Europe/Berlin", "delivery_hour": 6},
        headers=api.h("alice"),
    )
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin"
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"timezone": "../../etc/passwd"},
        {"delivery_hour": 24},
        {"delivery_hour": True},
        {"email": "x@y.z"},
    ):
        resp = api.client.patch("/api/v1/me", json=bad, headers=api.h("alice"))
        assert resp.status_code == 422, bad
        assert resp.json()["error"]["code"] == "invalid_request"
    after = api.client.get("/api/v1/me", headers=api.h("alice", **{"If-None-Match": first.headers["ETag"]}))
    assert after.status_code == 200 and after.json()["delivery_hour"] == 6
    with db.session_scope(api.db_url) as s:
        bob = s.get(User, api.users["bob"])
        assert bob is not None and bob.timezone == "UTC" and bob.interests == ""


@pytest.mark.pg
def test_subscribe_validates_url_commits_then_enqueues(api: Api, enqueued: list[int]) -> None:
    api.user("alice")
    api.user("bob")
    for bad in ("ftp://x.example.com/feed", "javascript:alert(1)", "https://", "http://user:pw@host.example/f"):
        r = api.client.post("/api/v1/podcasts", json={"feed_url": bad}, headers=api.h("alice"))
        assert r.status_code == 422, bad
    assert enqueued == []
    r = api.client.post(
        "/api/v1/podcasts", json={"feed_url": "HTTPS://Feeds.Example.com/pod.xml"}, headers=api.h("alice")
    )
    assert r.status_code == 202
    pid = r.json()["id"]
    assert r.json()["subscribed"] is True and r.json()["feed_url"] == "https://feeds.example.com/pod.xml"
    assert enqueued == [pid]
    with db.session_scope(api.db_url) as s:  # committed before the enqueue: a worker finds the row
        assert s.scalars(select(Subscription.podcast_id)).all() == [pid]
    # Not yet in the catalogue (no episodes): invisible to bob, by every route.
    assert api.client.get(f"/api/v1/podcasts/{pid}", headers=api.h("bob")).status_code == 404
    assert api.get("bob", "/api/v1/podcasts").json()["items"] == []  # type: ignore[attr-defined]
    assert api.client.delete(f"/api/v1/podcasts/{pid}/subscription", headers=api.h("bob")).status_code == 404
    assert b"feeds.example.com" not in api.client.get("/api/v1/podcasts/opml", headers=api.h("bob")).content
    mine = api.get("alice", "/api/v1/podcasts?subscribed=true").json()  # type: ignore[attr-defined]
    assert [p["id"] for p in mine["items"]] == [pid]
    assert api.client.delete(f"/api/v1/podcasts/{pid}/subscription", headers=api.h("alice")).status_code == 204
    assert api.get("alice", "/api/v1/podcasts?subscribed=true").json()["items"] == []  # type: ignore[attr-defined]


def test_feed_limit_per_user(db_url: str, monkeypatch: pytest.MonkeyPatch, enqueued: list[int]) -> None:
    a = make_api(db_url, monkeypatch, max_feeds_per_user="2", rate_per_second="1000", burst="1000")
    a.user("alice")
    codes = [
        a.client.post(
            "/api/v1/podcasts", json={"feed_url": f"https://f{i}.example.com/rss"}, headers=a.h("alice")
        ).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 409]


def test_opml_import_export_and_entity_bomb(api: Api, enqueued: list[int]) -> None:
    api.user("alice")
    doc = b"""<?xml version="1.0"?><opml version="2.0"><head/><body>
      <outline text="A" xmlUrl="https://a.example.com/feed"/>
      <outline text="group"><outline text="B" xmlUrl="http://b.example.com/rss.xml"/></outline>
      <outline text="bad" xmlUrl="file:///etc/passwd"/></body></opml>"""
    h = api.h("alice", **{"Content-Type": "text/x-opml"})
    r = api.client.post("/api/v1/podcasts/opml", content=doc, headers=h)
    assert r.status_code == 200
    assert [p["feed_url"] for p in r.json()["subscribed"]] == [
        "https://a.example.com/feed",
        "http://b.example.com/rss.xml",
    ]
    assert [x["url"] for x in r.json()["rejected"]] == ["file:///etc/passwd"]
    assert len(enqueued) == 2
    exported = api.client.get("/api/v1/podcasts/opml", headers=api.h("alice"))
    assert exported.headers["content-type"].startswith("text/x-opml")
    assert b'xmlUrl="https://a.example.com/feed"' in exported.content
    bomb = api.client.post("/api/v1/podcasts/opml", content=BOMB, headers=h)
    assert bomb.status_code == 200 and bomb.json()["subscribed"] == []
    assert "not an OPML document" in bomb.json()["rejected"][0]["reason"]
    wrong = api.client.post(
        "/api/v1/podcasts/opml", content=doc, headers=api.h("alice", **{"Content-Type": "text/plain"})
    )
    assert wrong.status_code == 415


def test_opml_size_limit(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_api(db_url, monkeypatch, max_opml_bytes="1000", rate_per_second="1000", burst="1000")
    a.user("alice")
    r = a.client.post(
        "/api/v1/podcasts/opml", content=b"<opml>" + b" " * 2000, headers=a.h("alice", **{"Content-Type": "text/xml"})
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_episode_with_transcript_and_catalogue_is_shared(api: Api) -> None:
    api.user("alice")
    api.user("bob")
    pid, eid, ids = add_episode(api.db_url, ["first line", "second line"])
    for who in ("alice", "bob"):  # the catalogue is shared (design.md): both read it
        body = api.get(who, f"/api/v1/episodes/{eid}").json()  # type: ignore[attr-defined]
        assert body["transcript_source"] == "publisher:text/vtt"
        assert [s["text"] for s in body["segments"]] == ["first line", "second line"]
        assert body["insight_ids"] == ids
        assert api.get(who, f"/api/v1/podcasts/{pid}").json()["subscribed"] is False  # type: ignore[attr-defined]
    listed = api.get("alice", f"/api/v1/episodes?podcast_id={pid}").json()  # type: ignore[attr-defined]
    assert [e["id"] for e in listed["items"]] == [eid]
    assert api.client.get("/api/v1/episodes/424242", headers=api.h("alice")).status_code == 404


def test_405_lists_every_method_of_the_path(api: Api) -> None:
    r = api.client.put("/api/v1/me")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "PATCH"}


def test_openapi_declares_errors_and_security(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    ops = [(p, m, op) for p, item in spec["paths"].items() if p.startswith("/api/v1") for m, op in item.items()]
    assert len(ops) >= 20
    for path, method, op in ops:
        assert {"401", "422", "429"} <= set(op["responses"]), (method, path)
        assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        assert op.get("security"), (method, path)
    assert api.client.get("/docs").status_code == 200


@pytest.mark.pg
def test_many_concurrent_requests_finish(api: Api) -> None:
    """More requests in flight than the connection pool holds (15): the hot async reads use the loop's own
    connection and sessions come and go on worker threads, so nothing waits on the loop for a connection."""
    import asyncio

    import httpx

    api.user("alice")
    _, _, ids = add_episode(api.db_url, ["sleep improves memory", "rates"])
    add_brief(api.db_url, api.users["alice"], dt.datetime.now(dt.UTC).date(), ids)
    paths = ["/api/v1/briefs/today", "/api/v1/me", "/api/v1/insights?q=sleep", f"/api/v1/insights/{ids[0]}"] * 15

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=api.h("alice")) as client:
            responses = await asyncio.wait_for(asyncio.gather(*(client.get(p) for p in paths)), timeout=60)
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * len(paths)
