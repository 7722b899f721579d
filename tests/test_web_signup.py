"""Sign-up with double opt-in: the confirmation goes through the real SMTP mail_sink and its link confirms."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from app import smtp_sink
from app.db import session_scope
from app.models import User
from app.pipeline import tokens
from tests.test_mail_support import Queue, body, link, read_mails

FORM = {
    "email": "new@example.com",
    "interests": "sleep science, central banks",
    "timezone": "Europe/Berlin",
    "delivery_hour": "6",
}

# Fixtures (site_client, enqueued, mail_sink) live in the support module.
pytest_plugins = ["tests.test_mail_support"]


def _user(email: str) -> User | None:
    with session_scope() as s:
        return s.scalar(select(User).where(User.email == email))


def test_landing_has_tagline_form_and_sample(site_client) -> None:  # type: ignore[no-untyped-def]
    r = site_client.get("/")
    assert r.status_code == 200
    assert (
        "Get your free personalized podcast brief. We scan new podcasts and send you the top 5 insights daily."
        in r.text
    )
    for field in ('name="email"', 'name="interests"', 'name="timezone"', 'name="delivery_hour"'):
        assert field in r.text
    assert "Sample brief" in r.text and "Intl.DateTimeFormat" in r.text


def test_signup_confirm_through_smtp(site_client, enqueued: Queue, mail_sink: smtp_sink.SinkHandle) -> None:  # type: ignore[no-untyped-def]
    r = site_client.post("/signup", data=FORM)
    assert r.status_code == 200 and "Check your inbox" in r.text
    user = _user("new@example.com")
    assert user is not None and user.confirmed_at is None
    assert (user.timezone, user.delivery_hour) == ("Europe/Berlin", 6)
    assert enqueued.named("build_and_send_brief") == []  # nothing but the confirmation before confirming
    mails = read_mails(mail_sink.mail_dir)
    assert len(mails) == 1 and mails[0]["To"] == "new@example.com"
    assert "List-Unsubscribe" not in mails[0]  # transactional, not list mail
    url = link(body(mails[0]), "/confirm/")
    path = url.split("://", 1)[1].split("/", 1)[1]
    r = site_client.get("/" + path)
    assert r.status_code == 200 and "You're in" in r.text
    user = _user("new@example.com")
    assert user is not None and user.confirmed_at is not None
    [(uid, day)] = enqueued.named("build_and_send_brief")
    assert uid == user.id and len(str(day)) == 10
    assert "/manage/" in r.text  # offers preferences
    # single use: the same link doesn't confirm (or sign in) again
    again = site_client.get("/" + path)
    assert "already confirmed" in again.text and "/manage/ey" not in again.text


def test_same_response_for_existing_address(site_client, enqueued: Queue, mail_sink: smtp_sink.SinkHandle) -> None:  # type: ignore[no-untyped-def]
    first = site_client.post("/signup", data=FORM)
    with session_scope() as s:
        u = s.scalar(select(User).where(User.email == "new@example.com"))
        assert u is not None
        u.confirmed_at = u.created_at
    second = site_client.post("/signup", data={**FORM, "interests": "hijacked"})
    assert (first.status_code, first.text) == (second.status_code, second.text)
    assert first.headers.get("set-cookie") == second.headers.get("set-cookie")
    user = _user("new@example.com")
    assert user is not None and user.interests == FORM["interests"]  # a confirmed account isn't changed
    mails = read_mails(mail_sink.mail_dir)
    assert len(mails) == 2
    assert "/manage/" in body(mails[1]) and "/confirm/" not in body(mails[1])


def test_expired_and_forged_confirm_links_refused(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    site_client.post("/signup", data=FORM)
    user = _user("new@example.com")
    assert user is not None
    old = tokens.sign("confirm", {"u": user.id, "f": tokens.fingerprint(user.token)}, ttl=60, now=time.time() - 3600)
    r = site_client.get(f"/confirm/{old}")
    assert r.status_code == 410 and "expired" in r.text
    good = tokens.user_token("confirm", user.id, user.token, ttl=60)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert site_client.get(f"/confirm/{forged}").status_code == 400
    wrong_purpose = tokens.user_token("feedback", user.id, user.token, ttl=60)
    assert site_client.get(f"/confirm/{wrong_purpose}").status_code == 400
    user = _user("new@example.com")
    assert user is not None and user.confirmed_at is None
    assert "Traceback" not in r.text


def test_form_errors_rerender_with_message(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    r = site_client.post(
        "/signup", data={**FORM, "email": "not-an-email", "timezone": "Mars/Olympus", "delivery_hour": "24"}
    )
    assert r.status_code == 422
    assert "look like an email address" in r.text and "Mars/Olympus" in r.text and "between 0 and 23" in r.text
    assert r.headers["content-type"].startswith("text/html")
    r = site_client.post("/signup", data={"email": "x@example.com"})  # fields missing entirely
    assert r.status_code == 422 and "own words" in r.text
    assert enqueued.calls == [] and _user("x@example.com") is None


def test_signup_throttled_per_address_silently(site_client, enqueued: Queue, mail_sink: smtp_sink.SinkHandle) -> None:  # type: ignore[no-untyped-def]
    pages = {site_client.post("/signup", data=FORM).text for _ in range(7)}
    assert len(pages) == 1
    assert len(read_mails(mail_sink.mail_dir)) == 5  # per-address cap: no mail flood, same page


def test_tokens_roundtrip_and_bit_flips(env: Path) -> None:
    tok = tokens.sign("manage", {"u": 1, "f": "abc"}, ttl=60)
    assert tokens.verify("manage", tok).data == {"u": 1, "f": "abc"}
    for i in range(len(tok)):
        flipped = tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1 :]
        try:
            tokens.verify("manage", flipped)
        except tokens.TokenError:
            continue
        raise AssertionError(f"flip at {i} accepted")


def test_signup_throttled_per_ip(site_client, enqueued: Queue) -> None:  # type: ignore[no-untyped-def]
    from app.web import site_limits

    codes = [
        site_client.post("/signup", data={**FORM, "email": f"u{i}@example.com"}).status_code
        for i in range(site_limits.signup_per_ip.limit + 2)
    ]
    assert codes[: site_limits.signup_per_ip.limit] == [200] * site_limits.signup_per_ip.limit
    assert codes[-2:] == [429, 429]


def test_limiter_window_slides() -> None:
    from app.web.site_limits import Limiter

    lim = Limiter(2, 10)
    assert lim.allow("k", now=0) and lim.allow("k", now=1) and not lim.allow("k", now=2)
    assert lim.allow("other", now=2)
    assert lim.allow("k", now=10.5)  # the first hit left the window
