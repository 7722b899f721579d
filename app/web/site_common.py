"""What every site page shares: the template renderer, link-token lookups and after-commit enqueueing."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import ROOT, get_settings
from app.models import User
from app.pipeline import schedule
from app.pipeline.mail import clock
from app.web import tokens

log = logging.getLogger(__name__)

templates = Jinja2Templates(directory=str(ROOT / "templates"))
templates.env.filters["clock"] = clock

# Token links sit in the URL path: no-referrer keeps them out of other sites' logs, no-store out of caches.
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; media-src https: http:; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def page(request: Request, name: str, *, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render templates/site/<name>.html with the security headers every page gets."""
    ctx.setdefault("base_url", get_settings().base_url.rstrip("/"))
    resp = templates.TemplateResponse(request, f"site/{name}.html", ctx, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def message(request: Request, title: str, text: str, *, status: int = 200, **ctx: Any) -> HTMLResponse:
    """A plain page with one message (errors, done pages); never a stack trace."""
    return page(request, "message", status=status, title=title, text=text, **ctx)


def enqueue(name: str, *args: Any) -> None:
    """Call workers.enqueue.<name>(*args). Only call this after the request's commit: the worker must see
    the rows. A broker failure is logged, not shown: the rows are safe and the beat reconciler retries."""
    try:
        module = importlib.import_module("workers.enqueue")
        getattr(module, name)(*args)
    except Exception:
        log.exception("could not enqueue %s%r", name, args)


def user_for_link(session: Session, purpose: str, token: str) -> User:
    """The user a signed link is for; TokenError when the link is forged, expired, or the account is gone."""
    claims = tokens.verify(purpose, token)
    user_id, fp = tokens.user_id_from(claims)
    user = session.get(User, user_id)
    if user is None or tokens.fingerprint(user.token) != fp:
        raise tokens.TokenError("this link is no longer valid")
    return user


def user_by_secret(session: Session, secret: str) -> User | None:
    """The user whose opaque User.token this is (unsubscribe, personal feeds, archive)."""
    if not secret or len(secret) > 64:
        return None
    return session.scalar(select(User).where(User.token == secret))


def local_today(user: User) -> dt.date:
    return schedule.local_date(user.timezone)


def bad_link(request: Request, exc: tokens.TokenError) -> HTMLResponse:
    if exc.expired:
        return message(
            request,
            "This link has expired",
            "For your safety, links in our emails stop working after a while. Ask for a fresh one below.",
            status=410,
            show_link_form=True,
        )
    return message(
        request,
        "This link doesn't work",
        "It may have been mistyped or cut off by your mail program. Ask for a fresh one below.",
        status=400,
        show_link_form=True,
    )


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
