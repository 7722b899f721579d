"""Signed, expiring tokens for links in emails (confirm, preferences, feedback).

HMAC-SHA256 over (purpose, payload, expiry) with settings.secret. The purpose is inside the MAC, so a
feedback token can never be replayed as a preferences token. Tokens also carry a short fingerprint of the
user's opaque User.token: deleting and re-creating an account (SQLite may reuse a row id) or rotating
User.token kills every old link.

Lives in the pipeline layer because app.pipeline.mail writes the links and app.web checks them; the web
side imports it through app.web.tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from app.config import get_settings

CONFIRM_TTL = 3 * 24 * 3600  # a confirmation link older than this is refused
MANAGE_TTL = 7 * 24 * 3600  # preferences magic links: long enough to survive in an inbox for a week
FEEDBACK_TTL = 60 * 24 * 3600


class TokenError(ValueError):
    """The token is malformed, forged, for another purpose, or expired (`expired` tells which)."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


@dataclass(frozen=True)
class Claims:
    purpose: str
    data: dict[str, object]
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(purpose: str, body: str) -> str:
    key = hashlib.sha256(b"podbrief-links:" + get_settings().secret.encode()).digest()
    digest = hmac.new(key, f"{purpose}\x00{body}".encode(), hashlib.sha256).digest()
    return _b64(digest[:20])  # 160 bits is plenty against forgery and keeps URLs short


def fingerprint(user_token: str) -> str:
    return hashlib.sha256(user_token.encode()).hexdigest()[:10]


def sign(purpose: str, data: dict[str, object], *, ttl: int, now: float | None = None) -> str:
    """A URL-safe token binding `data` to `purpose` until now + ttl seconds."""
    exp = int((time.time() if now is None else now) + ttl)
    body = _b64(json.dumps({"d": data, "e": exp}, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(purpose, body)}"


def verify(purpose: str, token: str, *, now: float | None = None) -> Claims:
    """The claims of a valid token, else TokenError. The MAC is checked before anything is parsed."""
    body, sep, mac = token.partition(".")
    if not sep or not body or not hmac.compare_digest(mac.encode(), _mac(purpose, body).encode()):
        raise TokenError("invalid link")
    try:
        payload = json.loads(_unb64(body))
        data, exp = payload["d"], int(payload["e"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("invalid link") from exc
    if not isinstance(data, dict):
        raise TokenError("invalid link")
    if (time.time() if now is None else now) > exp:
        raise TokenError("this link has expired", expired=True)
    return Claims(purpose, data, exp)


def user_token(purpose: str, user_id: int, user_secret: str, *, ttl: int, **extra: object) -> str:
    """A token for one user; `user_secret` is User.token (only its fingerprint is embedded)."""
    return sign(purpose, {"u": user_id, "f": fingerprint(user_secret), **extra}, ttl=ttl)


def user_id_from(claims: Claims) -> tuple[int, str]:
    """(user id, fingerprint) from user-token claims; the caller compares the fingerprint to the row."""
    uid, fp = claims.data.get("u"), claims.data.get("f")
    if not isinstance(uid, int) or not isinstance(fp, str):
        raise TokenError("invalid link")
    return uid, fp
