"""Response helpers shared by the routes: JSON with ETag/If-None-Match, opaque cursors, declared errors."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fastapi import HTTPException, Request, Response
from pydantic import BaseModel

from app.web.api.schemas import ErrorResponse

CACHE_CONTROL = "private, no-cache"  # per-user data: caches may keep it but must revalidate (ETag)


def error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("Missing, malformed, unknown or revoked API key"),
    422: error_doc("Invalid parameters or body"),
    429: {
        **error_doc("Too many requests for this key"),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_doc("No such resource for this caller")}
BAD_CURSOR: dict[int | str, dict[str, Any]] = {400: error_doc("The cursor is not one this API issued")}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: error_doc("The body could not be read as JSON")}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (If-None-Match matched the ETag)"}}


def etag_for(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def cached_json(request: Request, body: bytes, *, status_code: int = 200, etag: str | None = None) -> Response:
    """A JSON response with an ETag, or 304 when the client already has this representation."""
    etag = etag or etag_for(body)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def model_json(request: Request, model: BaseModel, *, status_code: int = 200) -> Response:
    return cached_json(request, model.model_dump_json().encode(), status_code=status_code)


def plain_json(model: BaseModel, *, status_code: int = 200) -> Response:
    return Response(model.model_dump_json().encode(), status_code=status_code, media_type="application/json")


def encode_cursor(kind: str, value: Any) -> str:
    raw = json.dumps([kind, value], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> Any:
    """The value inside a cursor of this kind; 400 for anything else (cursors are opaque, not editable)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_kind, value = json.loads(raw)
    except (ValueError, TypeError):
        raise HTTPException(400, "Invalid cursor.") from None
    if got_kind != kind:
        raise HTTPException(400, "Invalid cursor.")
    return value


def int_cursor(cursor: str | None, kind: str) -> int | None:
    value = decode_cursor(cursor, kind)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HTTPException(400, "Invalid cursor.")
    return value
