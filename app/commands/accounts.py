"""Account commands: `podbrief apikey create --email EMAIL [--name NAME]`, `podbrief apikey revoke`,
`podbrief apikey list`, and `podbrief user add` (an operator shortcut past the sign-up form)."""

from __future__ import annotations

import argparse
import secrets
import sys

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ApiKey, User, utcnow


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    apikey = subparsers.add_parser("apikey", help="API keys for /api/v1 (Authorization: Bearer)")
    sub = apikey.add_subparsers(dest="apikey_command", required=True)
    p = sub.add_parser("create", help="create a key for a user and print it (shown once)")
    p.add_argument("--email", required=True)
    p.add_argument("--name", default="cli", help="a label to recognise the key by")
    p.set_defaults(handler=cmd_create)
    p = sub.add_parser("revoke", help="revoke a key by its prefix (pb_<prefix>_...) or id")
    p.add_argument("--email", required=True)
    p.add_argument("key", help="the key's prefix, the whole key, or its numeric id")
    p.set_defaults(handler=cmd_revoke)
    p = sub.add_parser("list", help="list a user's keys (never the keys themselves)")
    p.add_argument("--email", required=True)
    p.set_defaults(handler=cmd_list)

    user = subparsers.add_parser("user", help="user accounts")
    usub = user.add_subparsers(dest="user_command", required=True)
    p = usub.add_parser("add", help="add a confirmed user (operator shortcut; the site does double opt-in)")
    p.add_argument("--email", required=True)
    p.add_argument("--interests", default="")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--delivery-hour", type=int, default=7)
    p.set_defaults(handler=cmd_user_add)


def _fail(reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr)
    return 1


def _user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def cmd_create(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.web.api.keys import create_api_key

    with session_scope() as session:
        user = _user(session, args.email)
        if user is None:
            return _fail(f"no user with email {args.email!r}")
        key, row = create_api_key(session, user.id, args.name)
    print(key)
    print(f"key id {row.id}, prefix {row.prefix}: store it now, it is not shown again", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.web.api.keys import revoke_api_key, split_key

    with session_scope() as session:
        user = _user(session, args.email)
        if user is None:
            return _fail(f"no user with email {args.email!r}")
        text = str(args.key).strip()
        parts = split_key(text)
        prefix = parts[0] if parts else text
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.prefix == prefix))
        if key_id is None and text.isdigit():
            key_id = int(text)
        if key_id is None or not revoke_api_key(session, user.id, key_id):
            return _fail(f"{args.email} has no API key {text!r}")
    print(f"revoked key {prefix}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.web.api.keys import list_api_keys

    with session_scope() as session:
        user = _user(session, args.email)
        if user is None:
            return _fail(f"no user with email {args.email!r}")
        for k in list_api_keys(session, user.id):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            used = f"{k.last_used_at:%Y-%m-%dT%H:%MZ}" if k.last_used_at else "never"
            print(f"{k.id}\tpb_{k.prefix}_…\t{k.name}\t{state}\tlast used {used}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from zoneinfo import available_timezones

    from app.db import session_scope

    if args.timezone not in available_timezones():
        return _fail(f"unknown time zone {args.timezone!r} (use an IANA name such as Europe/Berlin)")
    if not 0 <= args.delivery_hour <= 23:
        return _fail("--delivery-hour must be 0-23")
    with session_scope() as session:
        if _user(session, args.email) is not None:
            return _fail(f"a user with email {args.email!r} exists")
        user = User(
            email=args.email.strip(),
            interests=args.interests,
            timezone=args.timezone,
            delivery_hour=args.delivery_hour,
            token=secrets.token_urlsafe(32),
            confirmed_at=utcnow(),
        )
        session.add(user)
        session.flush()
        print(user.id)
    return 0
