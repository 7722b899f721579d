"""The website: landing + sign-up (double opt-in), confirm, unsubscribe (RFC 8058) and feedback links.

Preferences live in app.web.site_account, briefs/insights/personal feeds in app.web.site_briefs.
Every form is parsed by hand (fields typed str with defaults) so a bad value re-renders the form with a
message instead of FastAPI's JSON 422. Background work is enqueued only after the commit.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from app.config import ROOT
from app.db import session_scope
from app.models import Episode, EpisodeStatus, Feedback, Insight, User
from app.pipeline import mail
from app.web import site_account, site_briefs, site_forms, tokens
from app.web.site_common import (
    bad_link,
    client_ip,
    enqueue,
    local_today,
    message,
    page,
    user_by_secret,
    user_for_link,
)
from app.web.site_limits import mails_per_address, signup_per_ip

router = APIRouter(include_in_schema=False)

FEEDBACK_KINDS = {
    "more": ("More like this", "We'll rank insights like this one higher."),
    "less": ("Less like this", "We'll rank insights like this one lower."),
    "less_show": ("Less from this show", "We'll rank this show's insights lower."),
}

# Shown on the landing page until the catalogue has insights of its own.
SAMPLE = [
    {
        "show": "The Sleep Lab",
        "episode": "Why caffeine lingers",
        "text": "Caffeine's half-life is five to six hours, so a 3 pm coffee still leaves a quarter of the dose "
        "in your blood at 3 am — enough to cut deep sleep measurably even if you fall asleep fine.",
        "why": "You asked for: sleep, health research",
        "start": 754,
    },
    {
        "show": "Margins",
        "episode": "Pricing power, explained",
        "text": "A company has pricing power when it can raise prices 10% without losing customers; the test is "
        "churn after the increase, not gross margin before it.",
        "why": "You asked for: investing, business strategy",
        "start": 1312,
    },
    {
        "show": "Build Log",
        "episode": "Postgres at 10 TB",
        "text": "Most slow queries they fixed weren't missing indexes but stale statistics: running ANALYZE after "
        "bulk loads turned a 40-second report into 300 milliseconds.",
        "why": "You asked for: databases, software engineering",
        "start": 2290,
    },
]


def _sample(session: Session) -> list[dict[str, object]]:
    """Up to three recent, substantial insights from the catalogue; the built-in sample when there are none."""
    rows = session.scalars(
        select(Insight)
        .join(Episode)
        .where(Episode.status == EpisodeStatus.READY)
        .options(joinedload(Insight.episode).joinedload(Episode.podcast))
        .order_by(Insight.created_at.desc(), Insight.substance.desc())
        .limit(30)
    ).all()
    picked = sorted(rows, key=lambda i: i.substance, reverse=True)[:3]
    if len(picked) < 3:
        return SAMPLE
    return [
        {
            "show": i.episode.podcast.title,
            "episode": i.episode.title,
            "text": i.text[:300],
            "why": "A recent insight from our catalogue",
            "start": i.start,
        }
        for i in picked
    ]


def _landing(request: Request, prefs: site_forms.Prefs | None = None, *, status: int = 200) -> HTMLResponse:
    with session_scope() as session:
        sample = _sample(session)
        shows = session.scalar(select(func.count()).select_from(Episode).where(Episode.status == "ready")) or 0
    return page(
        request,
        "landing",
        status=status,
        prefs=prefs or site_forms.Prefs(),
        hours=range(24),
        sample=sample,
        episodes_scanned=shows,
    )


@router.get("/", response_class=HTMLResponse)
def landing(request: Request) -> HTMLResponse:
    return _landing(request)


@router.get("/signup", response_class=HTMLResponse)
def signup_form(request: Request) -> HTMLResponse:
    return _landing(request)


@router.post("/signup", response_class=HTMLResponse)
def signup(
    request: Request,
    email: str = Form(""),
    interests: str = Form(""),
    timezone: str = Form(""),
    delivery_hour: str = Form("7"),
) -> HTMLResponse:
    prefs = site_forms.signup(email, interests, timezone, delivery_hour)
    if prefs.errors:
        return _landing(request, prefs, status=422)
    if not signup_per_ip.allow(client_ip(request)):
        return message(request, "Too many sign-ups", "Please wait a few minutes and try again.", status=429)
    with session_scope() as session:
        user = session.scalar(select(User).where(func.lower(User.email) == prefs.email.lower()))
        if user is None:
            user = User(email=prefs.email, token=secrets.token_urlsafe(32))
            session.add(user)
        if user.confirmed_at is None:
            # Unconfirmed: the latest form wins (nothing is sent but the confirmation until the owner clicks).
            # A confirmed account is never changed from this unauthenticated form.
            user.interests = prefs.interests
            user.timezone = prefs.timezone
            user.delivery_hour = prefs.delivery_hour
        session.flush()
        user_id = user.id
    # The same mail task either way: it carries the confirm link, or for a confirmed address a preferences
    # link. The page below is identical in both cases (no account enumeration).
    if mails_per_address.allow(prefs.email.lower()):
        enqueue("send_confirmation", user_id)
    return page(request, "check_inbox", email=prefs.email)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, token: str) -> HTMLResponse:
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        user = user_for_link(session, "confirm", token)
        if user.confirmed_at is not None:
            # Confirm links are single-use: a second click doesn't act as a sign-in link.
            return message(
                request,
                "You're already confirmed",
                "This confirmation link has been used. Your briefs are on their way; to change your "
                "preferences, ask for a sign-in link below.",
                show_link_form=True,
            )
        user.confirmed_at = now
        user.unsubscribed_at = None
        user_id, secret, today = user.id, user.token, local_today(user)
        manage = mail.manage_url(user)
    enqueue("build_and_send_brief", user_id, today.isoformat())
    return page(
        request,
        "confirmed",
        brief_url=f"/u/{secret}/briefs/{today.isoformat()}",
        manage_url=manage,
    )


@router.get("/unsubscribe/{secret}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, secret: str) -> HTMLResponse:
    # GET never unsubscribes: mail scanners follow links (listmonk #1685, GitLab MR 156414).
    with session_scope() as session:
        user = user_by_secret(session, secret)
        if user is None:
            return message(request, "Unknown link", "This unsubscribe link isn't valid.", status=404)
        return page(request, "unsubscribe", email=user.email, done=user.unsubscribed_at is not None)


@router.post("/unsubscribe/{secret}", response_class=HTMLResponse)
def unsubscribe(request: Request, secret: str) -> HTMLResponse:
    """RFC 8058 one-click: works with no cookie and no CSRF token (the opaque token is the authority);
    answers 200, never a redirect; repeating it is harmless."""
    with session_scope() as session:
        user = user_by_secret(session, secret)
        if user is None:
            return message(request, "Unknown link", "This unsubscribe link isn't valid.", status=404)
        if user.unsubscribed_at is None:
            user.unsubscribed_at = dt.datetime.now(dt.UTC)
        email = user.email
    return page(request, "unsubscribe", email=email, done=True)


def _feedback_target(session: Session, token: str) -> tuple[User, Insight, str]:
    user = user_for_link(session, "feedback", token)
    claims = tokens.verify("feedback", token)
    insight_id, kind = claims.data.get("i"), claims.data.get("k")
    if not isinstance(insight_id, int) or kind not in FEEDBACK_KINDS:
        raise tokens.TokenError("invalid link")
    insight = session.get(Insight, insight_id)
    if insight is None:
        raise tokens.TokenError("this insight no longer exists")
    return user, insight, str(kind)


@router.get("/feedback/{token}", response_class=HTMLResponse)
def feedback_page(request: Request, token: str) -> HTMLResponse:
    with session_scope() as session:
        _user, insight, kind = _feedback_target(session, token)
        return page(
            request,
            "feedback",
            label=FEEDBACK_KINDS[kind][0],
            insight=insight,
            show=insight.episode.podcast.title,
            done=False,
        )


@router.post("/feedback/{token}", response_class=HTMLResponse)
def feedback(request: Request, token: str) -> HTMLResponse:
    with session_scope() as session:
        user, insight, kind = _feedback_target(session, token)
        exists = session.scalar(
            select(Feedback.id).where(
                Feedback.user_id == user.id, Feedback.insight_id == insight.id, Feedback.kind == kind
            )
        )
        if exists is None:  # a double click records one vote
            session.add(Feedback(user_id=user.id, insight_id=insight.id, kind=kind))
        label, effect = FEEDBACK_KINDS[kind]
        return page(
            request,
            "feedback",
            label=label,
            effect=effect,
            insight=insight,
            show=insight.episode.podcast.title,
            done=True,
        )


def install(app: FastAPI) -> None:
    """Mount the site on the lead's app (called by app.web.app.create_app)."""
    static = Path(ROOT / "static")
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(router)
    app.include_router(site_account.router)
    app.include_router(site_briefs.router)
    # A forged, expired or stale signed link (user_for_link and friends raise it): one page for every route.
    app.add_exception_handler(tokens.TokenError, _bad_link)


def _bad_link(request: Request, exc: Exception) -> HTMLResponse:
    assert isinstance(exc, tokens.TokenError)  # registered for TokenError only
    return bad_link(request, exc)


@router.get("/robots.txt")
def robots() -> Response:
    # Token pages must not be indexed even if a link leaks.
    return Response("User-agent: *\nAllow: /$\nDisallow: /\n", media_type="text/plain")
