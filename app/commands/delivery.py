"""`podbrief brief --email EMAIL --now`: build and send one user's brief for their current local date, once."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import func, select

from app.db import session_scope
from app.delivery import Outcome, send_delivery
from app.models import Brief, User, utcnow
from app.pipeline import briefs, mail, schedule


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("brief", help="build and send a user's brief for their local date (sends once)")
    p.add_argument("--email", required=True)
    p.add_argument("--now", action="store_true", required=True, help="for the user's current local date")
    p.set_defaults(handler=cmd_brief)


def _fail(message: str, code: int = 1) -> int:
    print(f"podbrief brief: {message}", file=sys.stderr)
    return code


def cmd_brief(args: argparse.Namespace) -> int:
    now = utcnow()
    with session_scope() as session:
        user = session.scalar(select(User).where(func.lower(User.email) == args.email.strip().lower()))
        if user is None:
            return _fail(f"no user with email {args.email}", 2)
        if user.confirmed_at is None:
            return _fail(f"{user.email} has not confirmed their address; nothing is sent before that", 2)
        if user.unsubscribed_at is not None:
            return _fail(f"{user.email} unsubscribed; nothing is sent", 2)
        local_date = schedule.local_now(now, user.timezone).date()
        brief_id = briefs.build(session, user.id, local_date, now=now)
        if brief_id is None:
            reason = user.last_skip_reason or "nothing new qualified"
            return _fail(f"no brief for {user.email} on {local_date}: {reason}", 3)
        delivery_id = mail.ensure_delivery(session, brief_id)
        brief = session.get(Brief, brief_id)
        n_items = len(brief.items) if brief else 0
        email = user.email

    outcome = send_delivery(delivery_id)
    if outcome == Outcome.SENT:
        print(f"sent the brief for {local_date} ({n_items} insights) to {email}")
        return 0
    if outcome == Outcome.ALREADY_SENT:
        print(f"the brief for {local_date} was already sent to {email}; not sending it again")
        return 0
    if outcome == Outcome.IN_PROGRESS:
        print(f"the brief for {local_date} to {email} is being sent by another process; not sending it again")
        return 0
    return _fail(f"sending the brief for {local_date} to {email} failed ({outcome}); see the delivery's error")
