"""Signed expiring link tokens, as the web pages use them.

The implementation sits in app.pipeline.tokens so the mail stage (which writes the links) can use it
without importing the web layer (see the import-linter layers contract in pyproject.toml).
"""

from __future__ import annotations

from app.pipeline.tokens import (
    CONFIRM_TTL,
    FEEDBACK_TTL,
    MANAGE_TTL,
    Claims,
    TokenError,
    fingerprint,
    sign,
    user_id_from,
    user_token,
    verify,
)

__all__ = [
    "CONFIRM_TTL",
    "FEEDBACK_TTL",
    "MANAGE_TTL",
    "Claims",
    "TokenError",
    "fingerprint",
    "sign",
    "user_id_from",
    "user_token",
    "verify",
]
