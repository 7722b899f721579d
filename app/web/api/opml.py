"""OPML 2.0 import and export of followed feeds. Parsing uses defusedxml: no DTDs, entities or external refs."""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeET

from app.models import Podcast


def feed_urls(data: bytes, *, limit: int) -> list[str]:
    """Every outline's xmlUrl, in document order, de-duplicated; ValueError for what isn't OPML."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except Exception as exc:  # ParseError, DTDForbidden, EntitiesForbidden...: one readable reason
        raise ValueError(f"not an OPML document: {type(exc).__name__}") from None
    if root.tag != "opml" or root.find("body") is None:
        raise ValueError("not an OPML document: no <opml><body>")
    urls: list[str] = []
    for outline in root.iter("outline"):
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if url and url not in urls:
            urls.append(url)
            if len(urls) >= limit:
                break
    return urls


def export(podcasts: Iterable[Podcast]) -> bytes:
    root = Element("opml", version="2.0")
    head = SubElement(root, "head")
    SubElement(head, "title").text = "podbrief subscriptions"
    body = SubElement(root, "body")
    for p in podcasts:
        attrs = {"type": "rss", "text": p.title or p.feed_url, "title": p.title or p.feed_url, "xmlUrl": p.feed_url}
        if p.site_url:
            attrs["htmlUrl"] = p.site_url
        SubElement(body, "outline", attrs)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + tostring(root, encoding="unicode").encode("utf-8")
