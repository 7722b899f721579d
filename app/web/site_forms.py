"""Validation of the site's HTML forms, and OPML in/out. Pure functions: no database, no FastAPI."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import defusedxml.ElementTree as defused_et
from defusedxml import DefusedXmlException

# Deliberately loose: one @, a dot in the domain, no spaces. The confirmation mail is the real check.
_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
MAX_INTERESTS = 2000
MAX_OPML_BYTES = 512 * 1024
MAX_OPML_FEEDS = 200


@dataclass
class Prefs:
    email: str = ""
    interests: str = ""
    timezone: str = "UTC"
    delivery_hour: int = 7
    errors: dict[str, str] = field(default_factory=dict)


def clean_email(raw: str) -> tuple[str, str | None]:
    value = raw.strip()
    if not value:
        return value, "Enter your email address."
    if len(value) > 254 or not _EMAIL.match(value):
        return value, "That doesn't look like an email address."
    local, _, domain = value.rpartition("@")
    # Domains are case-insensitive; the local part is kept as typed (RFC 5321), matched case-insensitively.
    return f"{local}@{domain.lower()}", None


def clean_timezone(raw: str) -> tuple[str, str | None]:
    value = raw.strip() or "UTC"
    if len(value) > 64 or ".." in value or value.startswith("/"):
        return value, "Pick a time zone such as Europe/Berlin or America/New_York."
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return value, f"“{value}” isn't a time zone we know. Try e.g. Europe/Berlin or America/New_York."
    return value, None


def clean_hour(raw: str) -> tuple[int, str | None]:
    try:
        hour = int(raw.strip())
    except ValueError:
        return 7, "Pick a delivery hour between 0 and 23."
    if not 0 <= hour <= 23:
        return 7, "Pick a delivery hour between 0 and 23."
    return hour, None


def clean_interests(raw: str, *, required: bool) -> tuple[str, str | None]:
    value = raw.strip()
    if required and not value:
        return value, "Tell us a few topics you care about, in your own words."
    if len(value) > MAX_INTERESTS:
        return value[:MAX_INTERESTS], f"Keep your interests under {MAX_INTERESTS} characters."
    return value, None


def signup(email: str, interests: str, timezone: str, delivery_hour: str) -> Prefs:
    prefs = Prefs()
    checks = [
        ("email", clean_email(email)),
        ("interests", clean_interests(interests, required=True)),
        ("timezone", clean_timezone(timezone)),
        ("delivery_hour", clean_hour(delivery_hour)),
    ]
    for name, (value, error) in checks:
        setattr(prefs, name, value)
        if error:
            prefs.errors[name] = error
    return prefs


def clean_feed_url(raw: str) -> tuple[str, str | None]:
    """Only http(s) URLs with a host; the feeds stage does the address checks when it fetches."""
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2048:
        return value, "Enter the feed's web address, starting with https://"
    return value, None


def parse_opml(data: bytes) -> list[str]:
    """Feed URLs (xmlUrl) from an OPML file; DTDs and entities are refused before parsing (entity bombs)."""
    if len(data) > MAX_OPML_BYTES:
        raise ValueError("That OPML file is too large.")
    try:
        root = defused_et.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ValueError("OPML files with a DOCTYPE or entities are not accepted.") from exc
    except ET.ParseError as exc:
        raise ValueError("That file isn't valid OPML.") from exc
    urls: list[str] = []
    for outline in root.iter("outline"):
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if url and clean_feed_url(url)[1] is None and url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError("No podcast feeds (xmlUrl) found in that OPML file.")
    return urls[:MAX_OPML_FEEDS]


def opml(title: str, feeds: list[tuple[str, str]]) -> str:
    """An OPML 2.0 document of (title, feed_url) pairs."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{_esc(title)}</title></head>",
        "  <body>",
    ]
    for name, url in feeds:
        attrs = f"text={quoteattr(name)} title={quoteattr(name)} xmlUrl={quoteattr(url)}"
        lines.append(f'    <outline type="rss" {attrs}/>')
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
