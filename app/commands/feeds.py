"""Feed commands: `podbrief ingest FEED_URL`, `podbrief feeds parse FILE --json`, `podbrief feeds list`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.errors import PipelineError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ingest", help="subscribe to a feed URL and poll it now")
    p.add_argument("feed_url")
    p.set_defaults(handler=cmd_ingest)

    feeds = subparsers.add_parser("feeds", help="feed tools")
    sub = feeds.add_subparsers(dest="feeds_command", required=True)
    p = sub.add_parser("parse", help="parse a local feed file exactly as ingestion would (no network)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON (the default output is JSON too)")
    p.add_argument("--base-url", default=None, help="URL relative links resolve against (default: file URL)")
    p.set_defaults(handler=cmd_parse)
    p = sub.add_parser("list", help="list podcasts with their status")
    p.set_defaults(handler=cmd_list)


def _fail(reason: str) -> int:
    print(f"error: {' '.join(reason.split())}", file=sys.stderr)
    return 1


def parsed_to_json(parsed: Any) -> dict[str, Any]:
    """The documented `feeds parse --json` shape (design.md)."""
    return {
        "title": parsed.title,
        "new_feed_url": parsed.new_feed_url,
        "episodes": [
            {
                "guid": e.guid,
                "title": e.title,
                "published": e.published.isoformat() if e.published else None,
                "enclosure_url": e.enclosure_url,
                "enclosure_type": e.enclosure_type,
                "duration_seconds": e.duration_seconds,
                "transcripts": [{"url": t.url, "type": t.type} for t in e.transcripts],
            }
            for e in parsed.episodes
        ],
    }


def cmd_parse(args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.pipeline.feeds import parse_feed

    path: Path = args.file
    try:
        size = path.stat().st_size
        if size > get_settings().fetch_max_feed_bytes:
            return _fail(f"{path}: {size} bytes, over the feed size cap")
        data = path.read_bytes()
    except OSError as exc:
        return _fail(f"{path}: {exc.strerror or exc}")
    # Relative links need an http(s) base; a file: URL would make every relative enclosure unusable.
    base = args.base_url or f"http://localhost/{path.name}"
    try:
        parsed = parse_feed(data, base)
    except PipelineError as exc:
        return _fail(f"{path}: {exc.reason}")
    json.dump(parsed_to_json(parsed), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.pipeline.feeds import poll, subscribe

    try:
        with session_scope() as session:
            podcast = subscribe(session, args.feed_url)
            result = poll(session, podcast.id)
            podcast_id, title, url = podcast.id, podcast.title, podcast.feed_url
    except PipelineError as exc:
        return _fail(exc.reason)
    if result.error:
        return _fail(f"{url}: {result.error}")
    _after_poll(result.new_episode_ids)
    print(f"podcast {podcast_id} {title!r}: {len(result.new_episode_ids)} new episode(s) from {url}")
    return 0


def _after_poll(episode_ids: list[int]) -> None:
    """Hand new episodes to the pipeline (the lead's seam); ingest still works where workers aren't installed."""
    if not episode_ids:
        return
    try:
        from workers import enqueue
    except ImportError:
        return
    try:
        enqueue.after_poll(episode_ids)
    except Exception as exc:  # the episodes are committed; reconcile picks them up if the broker is down
        print(f"warning: could not enqueue new episodes: {exc}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Podcast

    with session_scope() as session:
        for p in session.scalars(select(Podcast).order_by(Podcast.id)):
            error = f"  ({p.last_error})" if p.last_error else ""
            print(f"{p.id}\t{p.status}\t{p.next_check_at:%Y-%m-%d %H:%M}\t{p.title or '-'}\t{p.feed_url}{error}")
    return 0
