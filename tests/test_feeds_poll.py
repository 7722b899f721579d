"""subscribe / poll / due against a local HTTP server on 127.0.0.1 and a migrated database."""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import time
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import config
from app.commands import feeds as feed_commands
from app.errors import PermanentError
from app.models import Episode, EpisodeStatus, PodcastStatus
from app.pipeline.feeds import NEW_EPISODES_PER_POLL, backoff, due, normalize_feed_url, poll, subscribe
from tests.test_net_localserver import LocalServer, server  # noqa: F401

NOW = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC)
FIRST_PUB = dt.datetime(2025, 11, 10, 8, 0, tzinfo=dt.UTC)
DATA = Path(__file__).parent / "data" / "feeds"


def feed(items: list[tuple[str, str]], *, title: str = "Show", extra: str = "") -> bytes:
    """items: (guid, enclosure path); the channel declares the podcast namespace for transcripts."""
    body = "".join(
        f"<item><guid>{guid}</guid><title>{guid}</title>"
        f"<pubDate>{format_datetime(FIRST_PUB + dt.timedelta(days=i), usegmt=True)}</pubDate>"
        f'<enclosure url="{enc}" type="audio/mpeg" length="1000"/>'
        f'<podcast:transcript url="/t/{guid}.txt" type="text/plain"/>'
        f'<podcast:transcript url="/t/{guid}.vtt" type="text/vtt"/></item>'
        for i, (guid, enc) in enumerate(items)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0" '
        f'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel><title>{title}</title>{extra}'
        f"{body}</channel></rss>"
    ).encode()


@pytest.fixture
def site(db_url: str, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:  # noqa: F811
    monkeypatch.setenv("PODBRIEF_FETCH_ALLOW_HOSTS", server.host)
    config.reset_settings()
    return server


def episodes(session: Session, podcast_id: int) -> list[Episode]:
    return list(session.scalars(select(Episode).where(Episode.podcast_id == podcast_id).order_by(Episode.guid)))


def test_subscribe_normalises_and_is_get_or_create(session: Session) -> None:
    a = subscribe(session, " HTTP://Feeds.Example.COM:80/rss#top ")
    b = subscribe(session, "http://feeds.example.com/rss")
    c = subscribe(session, "feed://feeds.example.com/rss")
    assert a.id == b.id == c.id and a.feed_url == "http://feeds.example.com/rss"
    assert normalize_feed_url("feed:https://x.example/f") == "https://x.example/f"
    with pytest.raises(PermanentError):
        subscribe(session, "file:///etc/passwd")


def test_first_poll_inserts_episodes_with_best_transcript(session: Session, site: LocalServer) -> None:
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3"), ("g2", "/a/2.mp3")]), {"ETag": '"v1"'})
    podcast = subscribe(session, site.url("/feed"))
    result = poll(session, podcast.id, now=NOW)
    assert result.error is None and len(result.new_episode_ids) == 2
    rows = episodes(session, podcast.id)
    assert [r.guid for r in rows] == ["g1", "g2"]
    assert rows[0].enclosure_url == site.url("/a/1.mp3")
    assert rows[0].transcript_url == site.url("/t/g1.vtt") and rows[0].transcript_type == "text/vtt"
    assert rows[0].published_at == dt.datetime(2025, 11, 10, 8, 0, tzinfo=dt.UTC)
    assert {r.status for r in rows} == {EpisodeStatus.NEW}
    assert (podcast.title, podcast.etag, podcast.status) == ("Show", '"v1"', PodcastStatus.ACTIVE)
    assert podcast.next_check_at == NOW + dt.timedelta(minutes=config.get_settings().poll_interval_minutes)


def test_conditional_get_304_inserts_nothing(session: Session, site: LocalServer) -> None:
    body = feed([("g1", "/a/1.mp3")])

    def handle(req: http.server.BaseHTTPRequestHandler) -> None:
        if req.headers.get("If-None-Match") == '"v1"':
            req.send_response(304)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        req.send_response(200)
        req.send_header("ETag", '"v1"')
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    site.route("/feed", handle)
    podcast = subscribe(session, site.url("/feed"))
    assert len(poll(session, podcast.id, now=NOW).new_episode_ids) == 1
    again = poll(session, podcast.id, now=NOW + dt.timedelta(hours=1))
    assert again.new_episode_ids == [] and again.error is None
    assert site.seen[-1].headers["if-none-match"] == '"v1"'


def test_repoll_dedupes_by_guid_and_by_enclosure(session: Session, site: LocalServer) -> None:
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3"), ("g1", "/a/1b.mp3")]))
    podcast = subscribe(session, site.url("/feed"))
    assert len(poll(session, podcast.id, now=NOW).new_episode_ids) == 1  # duplicate guid in one feed
    # Same feed again, plus a re-guided copy of an existing enclosure, plus one genuinely new item.
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3"), ("g1-renamed", "/a/1.mp3"), ("g3", "/a/3.mp3")]))
    result = poll(session, podcast.id, now=NOW + dt.timedelta(hours=1))
    assert [session.get(Episode, i).guid for i in result.new_episode_ids] == ["g3"]  # type: ignore[union-attr]
    assert len(episodes(session, podcast.id)) == 2


def test_backlog_beyond_cap_is_recorded_as_skipped(session: Session, site: LocalServer) -> None:
    items = [(f"g{i:02d}", f"/a/{i}.mp3") for i in range(NEW_EPISODES_PER_POLL + 5)]
    site.reply("/feed", 200, feed(items))
    podcast = subscribe(session, site.url("/feed"))
    result = poll(session, podcast.id, now=NOW)
    rows = episodes(session, podcast.id)
    assert len(result.new_episode_ids) == NEW_EPISODES_PER_POLL and len(rows) == NEW_EPISODES_PER_POLL + 5
    skipped = sorted(r.guid for r in rows if r.status == EpisodeStatus.SKIPPED)
    assert skipped == ["g00", "g01", "g02", "g03", "g04"]  # the oldest by pubDate


def test_permanent_redirect_moves_feed_url(session: Session, site: LocalServer) -> None:
    site.redirect("/old", "/new", 301)
    site.reply("/new", 200, feed([("g1", "/a/1.mp3")]))
    podcast = subscribe(session, site.url("/old"))
    assert poll(session, podcast.id, now=NOW).error is None
    assert podcast.feed_url == site.url("/new")


def test_move_onto_an_existing_podcast_retires_the_duplicate(session: Session, site: LocalServer) -> None:
    site.redirect("/old", "/new", 308)
    site.reply("/new", 200, feed([("g1", "/a/1.mp3")]))
    existing = subscribe(session, site.url("/new"))
    podcast = subscribe(session, site.url("/old"))
    result = poll(session, podcast.id, now=NOW)
    assert podcast.status == PodcastStatus.RETIRED and f"podcast {existing.id}" in (result.error or "")
    assert podcast.feed_url == site.url("/old")  # the unique constraint is never hit
    session.flush()


def test_itunes_new_feed_url_moves_feed(session: Session, site: LocalServer) -> None:
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3")], extra="<itunes:new-feed-url>/v2/feed</itunes:new-feed-url>"))
    podcast = subscribe(session, site.url("/feed"))
    assert poll(session, podcast.id, now=NOW).error is None
    assert podcast.feed_url == site.url("/v2/feed") and podcast.etag is None


def test_410_retires_and_due_skips_it(session: Session, site: LocalServer) -> None:
    site.reply("/gone", 410)
    podcast = subscribe(session, site.url("/gone"))
    result = poll(session, podcast.id, now=NOW)
    assert podcast.status == PodcastStatus.RETIRED and "410" in (result.error or "")
    assert podcast.id not in due(session, NOW + dt.timedelta(days=30))
    assert poll(session, podcast.id, now=NOW).error == "podcast is retired"
    assert site.hits("/gone") == 1


@pytest.mark.parametrize(
    ("path", "setup", "fragment"),
    [
        ("/missing", lambda s: None, "404"),
        ("/malformed", lambda s: s.reply("/malformed", 200, b'<?xml version="1.0"?><foo><<<\x00>>'), "not well-formed"),
        ("/html", lambda s: s.reply("/html", 200, b"<html><body>login</body></html>"), "not an RSS/Atom feed"),
        ("/bomb", lambda s: s.reply("/bomb", 200, b'<!DOCTYPE r [<!ENTITY a "aaaa">]><rss>&a;</rss>'), "entities"),
        ("/err", lambda s: s.reply("/err", 503, b"upstream secret"), "503"),
    ],
)
def test_bad_feed_recorded_with_backoff_and_others_still_poll(
    session: Session, site: LocalServer, path: str, setup: object, fragment: str
) -> None:
    setup(site)  # type: ignore[operator]
    site.reply("/good", 200, feed([("g1", "/a/1.mp3")]))
    bad = subscribe(session, site.url(path))
    good = subscribe(session, site.url("/good"))
    result = poll(session, bad.id, now=NOW)
    assert result.error and bad.last_error == result.error and "\n" not in result.error
    assert fragment in result.error and "secret" not in result.error
    assert (bad.status, bad.error_count, bad.next_check_at) == (PodcastStatus.ERROR, 1, NOW + backoff(1))
    poll(session, bad.id, now=NOW + dt.timedelta(minutes=5))
    assert bad.error_count == 2 and bad.next_check_at == NOW + dt.timedelta(minutes=5) + backoff(2)
    assert backoff(2) == 2 * backoff(1) and backoff(50) == dt.timedelta(hours=24)
    assert poll(session, good.id, now=NOW).new_episode_ids  # one bad feed doesn't stop the others


def test_truncated_feed_is_lenient_not_an_error(session: Session, site: LocalServer) -> None:
    """Real feeds are often slightly broken: feedparser's loose mode keeps what it can read."""
    whole = feed([("g1", "/a/1.mp3"), ("g2", "/a/2.mp3")])
    site.reply("/feed", 200, whole[: whole.index(b"<item><guid>g2")] + b"<item><guid>g2</gu")
    podcast = subscribe(session, site.url("/feed"))
    result = poll(session, podcast.id, now=NOW)
    assert result.error is None and "g1" in {e.guid for e in episodes(session, podcast.id)}


def test_success_after_errors_resets_state(session: Session, site: LocalServer) -> None:
    site.reply("/feed", 500)
    podcast = subscribe(session, site.url("/feed"))
    poll(session, podcast.id, now=NOW)
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3")]))
    assert poll(session, podcast.id, now=NOW + dt.timedelta(minutes=6)).error is None
    assert (podcast.status, podcast.error_count, podcast.last_error) == (PodcastStatus.ACTIVE, 0, None)


def test_timeout_recorded_as_error(session: Session, site: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODBRIEF_FETCH_TOTAL_TIMEOUT", "1")
    config.reset_settings()
    site.route("/slow", lambda req: time.sleep(3))
    podcast = subscribe(session, site.url("/slow"))
    result = poll(session, podcast.id, now=NOW)
    assert "timed out" in (result.error or "") and podcast.status == PodcastStatus.ERROR


def test_loopback_feed_refused_without_allow_list(session: Session, server: LocalServer) -> None:  # noqa: F811
    server.reply("/feed", 200, b"INTERNAL-ADMIN")
    podcast = subscribe(session, server.url("/feed"))
    result = poll(session, podcast.id, now=NOW)
    assert "refused" in (result.error or "") and "loopback" in (result.error or "")
    assert server.seen == [] and "INTERNAL" not in (podcast.last_error or "")


def test_due_orders_by_next_check_and_excludes_retired(session: Session) -> None:
    a = subscribe(session, "https://a.example/feed")
    b = subscribe(session, "https://b.example/feed")
    c = subscribe(session, "https://c.example/feed")
    d = subscribe(session, "https://d.example/feed")
    a.next_check_at = NOW - dt.timedelta(minutes=1)
    b.next_check_at = NOW - dt.timedelta(hours=1)
    c.next_check_at = NOW + dt.timedelta(minutes=1)
    d.next_check_at, d.status = NOW - dt.timedelta(hours=2), PodcastStatus.RETIRED
    session.flush()
    assert due(session, NOW) == [b.id, a.id]
    assert due(session, NOW, limit=1) == [b.id]


# ------------------------------------------------------------------------------------------- CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="podbrief")
    feed_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_cli_parse_prints_documented_json(capsys: pytest.CaptureFixture[str], env: Path) -> None:
    assert run_cli("feeds", "parse", str(DATA / "partytime" / "example.xml"), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"title", "new_feed_url", "episodes"}
    first = out["episodes"][0]
    assert set(first) == {
        "guid",
        "title",
        "published",
        "enclosure_url",
        "enclosure_type",
        "duration_seconds",
        "transcripts",
    }
    assert first["published"] == "2020-10-09T04:30:38+00:00"
    assert first["transcripts"] == [{"url": "https://example.com/ep3/transcript.txt", "type": "text/plain"}]


def test_cli_parse_unparseable_exits_nonzero_one_line(
    capsys: pytest.CaptureFixture[str], env: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b'<!DOCTYPE r [<!ENTITY a "x">]><rss>&a;</rss>')
    assert run_cli("feeds", "parse", str(bad), "--json") != 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "entities" in captured.err


def test_cli_ingest_subscribes_polls_and_hands_off(
    capsys: pytest.CaptureFixture[str], site: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[list[int]] = []
    monkeypatch.setattr(feed_commands, "_after_poll", handed.append)
    site.reply("/feed", 200, feed([("g1", "/a/1.mp3"), ("g2", "/a/2.mp3")]))
    assert run_cli("ingest", site.url("/feed")) == 0
    assert "2 new episode(s)" in capsys.readouterr().out and len(handed[0]) == 2
    assert run_cli("ingest", site.url("/missing")) == 1
    err = capsys.readouterr().err
    assert "404" in err and err.count("\n") == 1


def test_cli_ingest_refused_feed_exits_nonzero(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    assert run_cli("ingest", "http://169.254.169.254/latest/meta-data/") == 1
    assert "refused" in capsys.readouterr().err
    assert run_cli("ingest", "gopher://example.com/") == 1
