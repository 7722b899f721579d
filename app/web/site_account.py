"""Preferences behind a magic link (no passwords): interests, podcasts, OPML, delivery time, pause, delete.

The signed, expiring token in the path is the credential; it is also what makes the forms safe from
cross-site posts (another site can't know it). Edits take effect from the next brief.
"""

from __future__ import annotations

import datetime as dt
import logging

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Podcast, PodcastStatus, Subscription, User
from app.web import site_forms
from app.web.api import keys as api_keys
from app.web.site_common import client_ip, enqueue, message, page, user_for_link
from app.web.site_limits import mails_per_address, signup_per_ip

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

CATALOGUE_LIMIT = 500


def _catalogue(session: Session) -> list[Podcast]:
    return list(
        session.scalars(
            select(Podcast)
            .where(Podcast.status != PodcastStatus.RETIRED)
            .order_by(func.lower(Podcast.title), Podcast.id)
            .limit(CATALOGUE_LIMIT)
        ).all()
    )


def _followed(session: Session, user_id: int) -> set[int]:
    return set(session.scalars(select(Subscription.podcast_id).where(Subscription.user_id == user_id)).all())


def _prefs_page(
    request: Request,
    session: Session,
    user: User,
    token: str,
    *,
    notice: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
    new_key: str = "",
) -> HTMLResponse:
    return page(
        request,
        "manage",
        status=status,
        user=user,
        token=token,
        catalogue=_catalogue(session),
        followed=_followed(session, user.id),
        hours=range(24),
        notice=notice,
        errors=errors or {},
        api_keys=[k for k in api_keys.list_api_keys(session, user.id) if k.revoked_at is None],
        new_key=new_key,
    )


def _subscribe_feed(session: Session, user: User, url: str) -> int:
    """Get-or-create the catalogue Podcast for url and follow it; returns the podcast id."""
    try:
        from app.pipeline import feeds

        podcast: Podcast = feeds.subscribe(session, url)
    except (ImportError, AttributeError):  # the feeds stage isn't installed: keep the URL as given
        existing = session.scalar(select(Podcast).where(Podcast.feed_url == url))
        if existing is None:
            existing = Podcast(feed_url=url, title=url)
            session.add(existing)
            session.flush()
        podcast = existing
    if (
        session.scalar(
            select(Subscription.id).where(Subscription.user_id == user.id, Subscription.podcast_id == podcast.id)
        )
        is None
    ):
        session.add(Subscription(user_id=user.id, podcast_id=podcast.id))
        session.flush()
    return podcast.id


# ------------------------------------------------------------------------------------------------
# asking for a link


@router.get("/manage", response_class=HTMLResponse)
def request_link_form(request: Request) -> HTMLResponse:
    return page(request, "manage_request", sent=False, error="", email="")


@router.post("/manage", response_class=HTMLResponse)
def request_link(request: Request, email: str = Form("")) -> HTMLResponse:
    address, error = site_forms.clean_email(email)
    if error:
        return page(request, "manage_request", status=422, sent=False, error=error, email=address)
    if not signup_per_ip.allow(client_ip(request)):
        return message(request, "Too many requests", "Please wait a few minutes and try again.", status=429)
    with session_scope() as session:
        user_id = session.scalar(select(User.id).where(func.lower(User.email) == address.lower()))
    # Same page whether or not the address has an account; the mail says "confirm" or "here's your link".
    if user_id is not None and mails_per_address.allow(address.lower()):
        enqueue("send_confirmation", user_id)
    return page(request, "manage_request", sent=True, error="", email=address)


# ------------------------------------------------------------------------------------------------
# the preferences page


@router.get("/manage/{token}", response_class=HTMLResponse)
def preferences(request: Request, token: str) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        return _prefs_page(request, session, user, token)


@router.post("/manage/{token}", response_class=HTMLResponse)
def save_preferences(
    request: Request,
    token: str,
    interests: str = Form(""),
    timezone: str = Form(""),
    delivery_hour: str = Form("7"),
    paused: str = Form(""),
    podcasts: list[str] = Form([]),
) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        errors: dict[str, str] = {}
        values = {}
        for name, (value, error) in (
            ("interests", site_forms.clean_interests(interests, required=True)),
            ("timezone", site_forms.clean_timezone(timezone)),
            ("delivery_hour", site_forms.clean_hour(delivery_hour)),
        ):
            values[name] = value
            if error:
                errors[name] = error
        if errors:
            session.rollback()
            return _prefs_page(request, session, user, token, errors=errors, status=422)
        user.interests = str(values["interests"])
        user.timezone = str(values["timezone"])
        user.delivery_hour = int(values["delivery_hour"])
        user.paused = bool(paused)
        # Saving the form is an explicit "keep sending me briefs": it undoes an earlier unsubscribe.
        user.unsubscribed_at = None
        wanted = {int(p) for p in podcasts if p.isdigit()}
        known = set(session.scalars(select(Podcast.id).where(Podcast.id.in_(wanted))).all()) if wanted else set()
        have = _followed(session, user.id)
        session.execute(
            delete(Subscription).where(Subscription.user_id == user.id, Subscription.podcast_id.in_(have - known))
        )
        for pid in sorted(known - have):
            session.add(Subscription(user_id=user.id, podcast_id=pid))
        session.flush()
        notice = "Saved. Your next brief will use these settings."
        if user.paused:
            notice = "Saved. Your brief is paused until you untick “Pause”."
        return _prefs_page(request, session, user, token, notice=notice)


@router.post("/manage/{token}/feeds", response_class=HTMLResponse)
def add_feed(request: Request, token: str, feed_url: str = Form("")) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        url, error = site_forms.clean_feed_url(feed_url)
        if error:
            return _prefs_page(request, session, user, token, errors={"feed_url": error}, status=422)
        podcast_id = _subscribe_feed(session, user, url)
        response = _prefs_page(
            request, session, user, token, notice="Added. We'll scan that feed and include its new episodes."
        )
    enqueue("subscribe_feed", podcast_id)
    return response


@router.get("/manage/{token}/opml")
def export_opml(request: Request, token: str) -> Response:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        rows = session.execute(
            select(Podcast.title, Podcast.feed_url)
            .join(Subscription, Subscription.podcast_id == Podcast.id)
            .where(Subscription.user_id == user.id)
            .order_by(Podcast.title)
        ).all()
    body = site_forms.opml("podbrief subscriptions", [(t or u, u) for t, u in rows])
    return Response(
        body,
        media_type="text/x-opml; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="podbrief.opml"', "Cache-Control": "no-store"},
    )


@router.post("/manage/{token}/opml", response_class=HTMLResponse)
def import_opml(request: Request, token: str, opml: UploadFile | None = File(None)) -> HTMLResponse:
    data = opml.file.read(site_forms.MAX_OPML_BYTES + 1) if opml is not None else b""
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        try:
            urls = site_forms.parse_opml(data)
        except ValueError as exc:
            return _prefs_page(request, session, user, token, errors={"opml": str(exc)}, status=422)
        ids = [_subscribe_feed(session, user, url) for url in urls]
        response = _prefs_page(request, session, user, token, notice=f"Imported {len(ids)} podcasts from OPML.")
    for podcast_id in ids:
        enqueue("subscribe_feed", podcast_id)
    return response


@router.get("/manage/{token}/delete", response_class=HTMLResponse)
def delete_page(request: Request, token: str) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        return page(request, "delete", token=token, email=user.email)


@router.post("/manage/{token}/delete", response_class=HTMLResponse)
def delete_account(request: Request, token: str, confirm: str = Form("")) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        if confirm != "yes":
            return page(request, "delete", status=422, token=token, email=user.email, error="Tick the box to confirm.")
        # Briefs, deliveries, subscriptions, feedback and API keys go with it (ON DELETE CASCADE).
        session.delete(user)
        log.info("account %s deleted at %s", user.id, dt.datetime.now(dt.UTC).isoformat())
    return message(
        request,
        "Your account is deleted",
        "We removed your address, preferences, briefs and feedback. Nothing more will be sent. "
        "Thanks for trying podbrief.",
    )


@router.post("/manage/{token}/keys", response_class=HTMLResponse)
def create_key(request: Request, token: str, name: str = Form("")) -> HTMLResponse:
    """A new API key, shown on this page once; only its hash is kept."""
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        plaintext, _ = api_keys.create_api_key(session, user.id, name.strip()[:200])
        return _prefs_page(
            request,
            session,
            user,
            token,
            new_key=plaintext,
            notice="Your new API key is below. Copy it now: it won't be shown again.",
        )


@router.post("/manage/{token}/keys/{key_id}/revoke", response_class=HTMLResponse)
def revoke_key(request: Request, token: str, key_id: int) -> HTMLResponse:
    with session_scope() as session:
        user = user_for_link(session, "manage", token)
        if not api_keys.revoke_api_key(session, user.id, key_id):
            return _prefs_page(request, session, user, token, errors={"key": "No such key."}, status=404)
        return _prefs_page(request, session, user, token, notice="Key revoked. It stops working at once.")
