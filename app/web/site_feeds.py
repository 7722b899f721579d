"""A user's ranked insights as RSS 2.0 and JSON Feed 1.1 (pure rendering; the page handler queries)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from dataclasses import dataclass
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class FeedEntry:
    id: str
    url: str
    title: str
    text: str
    published: dt.datetime
    show: str
    episode: str
    moment_url: str
    why: str


def _summary(entry: FeedEntry) -> str:
    parts = [entry.text]
    if entry.why:
        parts.append(f"Why you got this: {entry.why}")
    parts.append(f"From {entry.show}: {entry.episode}")
    if entry.moment_url:
        parts.append(f"Listen: {entry.moment_url}")
    return "\n\n".join(parts)


def rss(*, title: str, link: str, self_url: str, entries: list[FeedEntry]) -> str:
    items = []
    for e in entries:
        items.append(
            "    <item>\n"
            f"      <title>{escape(e.title)}</title>\n"
            f"      <link>{escape(e.url)}</link>\n"
            f'      <guid isPermaLink="false">{escape(e.id)}</guid>\n'
            f"      <pubDate>{email.utils.format_datetime(e.published)}</pubDate>\n"
            f"      <category>{escape(e.show)}</category>\n"
            f"      <description>{escape(_summary(e))}</description>\n"
            "    </item>"
        )
    updated = max((e.published for e in entries), default=dt.datetime.now(dt.UTC))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">\n'
        "  <channel>\n"
        f"    <title>{escape(title)}</title>\n"
        f"    <link>{escape(link)}</link>\n"
        f'    <atom:link href="{escape(self_url)}" rel="self" type="application/rss+xml"/>\n'
        "    <description>Your top podcast insights, ranked for you by podbrief.</description>\n"
        f"    <lastBuildDate>{email.utils.format_datetime(updated)}</lastBuildDate>\n"
        + "\n".join(items)
        + ("\n" if items else "")
        + "  </channel>\n</rss>\n"
    )


def json_feed(*, title: str, link: str, self_url: str, entries: list[FeedEntry]) -> str:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": title,
        "home_page_url": link,
        "feed_url": self_url,
        "description": "Your top podcast insights, ranked for you by podbrief.",
        "items": [
            {
                "id": e.id,
                "url": e.url,
                "title": e.title,
                "content_text": _summary(e),
                "date_published": e.published.isoformat(),
                "tags": [e.show],
                **({"external_url": e.moment_url} if e.moment_url else {}),
            }
            for e in entries
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)
