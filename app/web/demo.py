"""Serves the demo podcast (feed + audio) from files in the repository, so `make run` needs no outside feed."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from xml.sax.saxutils import escape

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response

from app.config import get_settings
from app.demo import EPISODES, FEED_PATH, audio_file

# Published "today" relative to server start, so the demo episodes always count as new.
_STARTED = dt.datetime.now(dt.UTC).replace(microsecond=0)


def feed_xml(base_url: str) -> str:
    items = []
    for ep in EPISODES:
        n = int(str(ep["n"]))
        path = audio_file(n)
        published = _STARTED - dt.timedelta(hours=4 - n)
        url = f"{base_url}/demo/audio/episode-{n}.mp3"
        items.append(
            f"""    <item>
      <title>{escape(str(ep["title"]))}</title>
      <description>{escape(str(ep["description"]))}</description>
      <guid isPermaLink="false">podbrief-demo-episode-{n}</guid>
      <pubDate>{format_datetime(published)}</pubDate>
      <enclosure url="{escape(url)}" length="{path.stat().st_size}" type="audio/mpeg"/>
    </item>"""
        )
    body = "\n".join(items)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
  <channel>
    <title>Signal and Noise (podbrief demo)</title>
    <link>{escape(base_url)}/</link>
    <description>A tiny demo show bundled with podbrief: sleep and learning, batteries, index funds.</description>
    <language>en</language>
{body}
  </channel>
</rss>
"""


def install(app: FastAPI) -> None:
    @app.get(FEED_PATH, include_in_schema=False)
    def demo_feed() -> Response:
        return Response(feed_xml(get_settings().base_url.rstrip("/")), media_type="application/rss+xml")

    @app.get("/demo/audio/episode-{n}.mp3", include_in_schema=False)
    def demo_audio(n: int) -> FileResponse:
        if not any(int(str(ep["n"])) == n for ep in EPISODES):
            raise HTTPException(404, "no such demo episode")
        return FileResponse(audio_file(n), media_type="audio/mpeg")
