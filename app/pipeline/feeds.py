"""Feeds stage: subscribe to a feed URL, poll it, record new episodes.

Input rows:  Podcast (feed_url, etag, last_modified, status, next_check_at).
Output rows: Podcast (title, etag/last_modified, status/last_error/error_count, next_check_at, feed_url after a
             permanent move), Episode (status=new, or skipped beyond NEW_EPISODES_PER_POLL) per new item.
Idempotency: an item is new only if neither its guid (falling back to the enclosure URL) nor its enclosure URL
             is already known for that podcast, so re-polling an unchanged feed inserts nothing; a 304 inserts
             nothing. `poll` never raises for a bad feed: the failure is recorded on the Podcast row.

Safety: the feed bytes come only from app.net (the guarded client) and feedparser only ever sees bytes
(a str would be opened as a path or URL). Documents that declare entities are refused before feedparser runs:
feedparser 6.0.14 falls back to a loose parser that expands "safe" entities without limit (0.12 MB of quadratic
blowup -> 2.6 GB of RAM). Enclosure/transcript URLs are resolved against the feed URL and must be http(s);
they are fetched later through the same guarded client.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import hashlib
import logging
import re
import time
import xml.etree.ElementTree as ET
import xml.sax
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import feedparser
from feedparser.encodings import convert_to_utf8
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import net
from app.config import get_settings
from app.errors import PermanentError, PipelineError
from app.models import Episode, EpisodeStatus, Podcast, PodcastStatus, utcnow

log = logging.getLogger(__name__)

# A new subscription to a show with a 500-episode back catalogue must not queue 500 transcriptions: only the
# newest items of one poll become `new`; the rest are recorded as `skipped` (known, for dedupe; never processed).
NEW_EPISODES_PER_POLL = 20
BACKOFF_FIRST = dt.timedelta(minutes=5)
BACKOFF_MAX = dt.timedelta(hours=24)

# Publisher transcript formats in order of preference (timed formats first: they give insight timestamps).
TRANSCRIPT_PREFERENCE = ("text/vtt", "application/x-subrip", "application/json", "text/html", "text/plain")
_TRANSCRIPT_ALIASES = {"application/srt": "application/x-subrip", "text/srt": "application/x-subrip"}

_ENTITY_DECL = re.compile(rb"<!\s*ENTITY", re.IGNORECASE)
_DOCTYPE = re.compile(rb"<!\s*DOCTYPE", re.IGNORECASE)
_FEED_SCHEMES = {"feed": "http", "itpc": "http", "pcast": "http", "podcast": "http"}
_MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class Transcript:
    url: str
    type: str


@dataclass(frozen=True)
class ParsedEpisode:
    guid: str
    title: str
    published: dt.datetime | None
    enclosure_url: str | None
    enclosure_type: str | None
    enclosure_length: int | None  # the publisher's claim: a hint, never trusted for allocation
    duration_seconds: float | None
    transcripts: list[Transcript] = field(default_factory=list)
    description: str = ""
    link: str | None = None

    @property
    def best_transcript(self) -> Transcript | None:
        return choose_transcript(self.transcripts)


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    new_feed_url: str | None
    episodes: list[ParsedEpisode]
    description: str = ""
    site_url: str | None = None
    image_url: str | None = None


@dataclass(frozen=True)
class PollResult:
    new_episode_ids: list[int]
    error: str | None = None


# --------------------------------------------------------------------------------------------- parsing


def refuse_entities(data: bytes) -> None:
    """Raise PermanentError if the document declares a DOCTYPE with entity declarations.

    Checked on the raw bytes and on the UTF-8 bytes feedparser itself works on (a UTF-16 feed hides
    `<!ENTITY` from a raw byte search). A DOCTYPE without entities (RSS 0.91 Netscape) is fine: external DTDs
    are never loaded by expat here.
    """
    scratch: dict[str, Any] = {}
    blobs = [data]
    with contextlib.suppress(Exception):  # if conversion fails here, feedparser fails the same way below
        blobs.append(convert_to_utf8({}, data, scratch))
    for codec in _wide_codecs(data[:4]):  # UTF-16/32 hide the markup from a byte search
        blobs.append(data.decode(codec, errors="ignore").encode("utf-8"))
    for blob in blobs:
        if _DOCTYPE.search(blob) and _ENTITY_DECL.search(blob):
            raise PermanentError("refused feed: DOCTYPE declares entities (entity expansion attack guard)")


def _wide_codecs(head: bytes) -> tuple[str, ...]:
    """Candidate UTF-16/32 codecs from the first four bytes (BOM or the NULs of '<?' / '<r')."""
    if head.count(b"\x00") >= 3 or head in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return ("utf-32-le", "utf-32-be")
    if b"\x00" in head or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return ("utf-16-le", "utf-16-be")
    return ()


def parse_feed(data: bytes, url: str) -> ParsedFeed:
    """Parse feed bytes fetched from `url` (the base for relative links). Pure; raises PermanentError."""
    if not isinstance(data, bytes | bytearray):
        raise TypeError("parse_feed takes bytes from the guarded client, never a str (feedparser opens those)")
    data = bytes(data)
    if not data.strip():
        raise PermanentError("empty feed document")
    if len(data) > get_settings().fetch_max_feed_bytes:
        raise PermanentError(f"feed document over {get_settings().fetch_max_feed_bytes} bytes")
    refuse_entities(data)
    try:
        # No base URL on purpose: feedparser would resolve a relative <guid> ("g1") against it, and a feed
        # that moves would then re-announce every episode. We resolve links/enclosures ourselves.
        parsed = feedparser.parse(data)
    except RecursionError as exc:
        raise PermanentError("feed nests too deeply to parse") from exc
    except Exception as exc:  # feedparser crashing on a hostile document means: malformed document
        raise PermanentError(f"feed parser failed on this document ({type(exc).__name__})") from exc
    if not parsed.get("version") and not parsed.entries:
        problem = parsed.get("bozo_exception")
        # Only an XML syntax error says something useful; feedparser's other bozo notes are about headers.
        detail = f" ({_one_line(str(problem))})" if isinstance(problem, xml.sax.SAXParseException) else ""
        raise PermanentError(f"not an RSS/Atom feed{detail}")
    extra = _item_transcripts(data, url)
    feed = parsed.feed
    episodes: list[ParsedEpisode] = []
    for index, entry in enumerate(parsed.entries):
        transcripts = extra[index] if extra is not None and len(extra) == len(parsed.entries) else None
        episode = _episode(entry, url, transcripts)
        if episode is not None:
            episodes.append(episode)
    return ParsedFeed(
        title=_text(feed.get("title")),
        # itunes:new-feed-url, or the older <redirect><newLocation> some hosts still emit.
        new_feed_url=_web_url(feed.get("itunes_new-feed-url") or feed.get("newlocation"), url),
        episodes=episodes,
        description=_text(feed.get("subtitle") or feed.get("summary")),
        site_url=_web_url(feed.get("link"), url),
        image_url=_web_url((feed.get("image") or {}).get("href"), url),
    )


def _episode(entry: Any, base: str, transcripts: list[Transcript] | None) -> ParsedEpisode | None:
    # <enclosure> first; Media RSS <media:content> only when a feed has no enclosure at all.
    enclosure = _pick_enclosure(entry.get("enclosures") or [], base) or _pick_enclosure(
        [m for m in entry.get("media_content") or [] if _text(m.get("type")).startswith(("audio/", "video/"))],
        base,
    )
    enclosure_url = enclosure[0] if enclosure else None
    if transcripts is None:  # the strict second pass failed: feedparser keeps only the last transcript tag
        transcripts = _transcripts_from(entry.get("podcast_transcript"), base)
    guid = _text(entry.get("id")) or (enclosure_url or "")
    if not guid:
        return None  # nothing to deduplicate on, nothing to fetch
    if len(guid) > 1024:
        guid = "sha256:" + hashlib.sha256(guid.encode()).hexdigest()
    return ParsedEpisode(
        guid=guid,
        title=_text(entry.get("title")).strip() or _file_stem(enclosure_url),
        published=_published(entry),
        enclosure_url=enclosure_url,
        enclosure_type=enclosure[1] if enclosure else None,
        enclosure_length=enclosure[2] if enclosure else None,
        duration_seconds=parse_duration(entry.get("itunes_duration")),
        transcripts=transcripts,
        description=_text(entry.get("summary")),
        link=_web_url(entry.get("link"), base),
    )


def _pick_enclosure(enclosures: list[Any], base: str) -> tuple[str, str | None, int | None] | None:
    """First audio enclosure with a usable URL, else first video, else first usable one."""
    usable: list[tuple[str, str | None, int | None]] = []
    for enc in enclosures:
        href = _web_url(enc.get("href") or enc.get("url"), base)
        if href is None:
            continue  # file:, javascript:, gopher:, data:, malformed: never queued for download
        kind = _text(enc.get("type")).lower() or None
        size = _length(enc.get("length") or enc.get("filesize"))
        usable.append((href, kind[:200] if kind else None, size))
    for prefix in ("audio/", "video/"):
        for item in usable:
            if item[1] and item[1].startswith(prefix):
                return item
    return usable[0] if usable else None


def _item_transcripts(data: bytes, base: str) -> list[list[Transcript]] | None:
    """Every podcast:transcript of every item, in document order, or None when the strict parse fails.

    feedparser stores one `podcast_transcript` per entry (the last tag wins); publishers list several formats,
    so a strict ElementTree pass (entities already refused above) collects them all.
    """
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, RecursionError):
        return None
    items: list[list[Transcript]] = []
    for element in root.iter():
        if not isinstance(element.tag, str) or _local(element.tag) not in ("item", "entry"):
            continue
        found: list[Transcript] = []
        for child in element:
            if isinstance(child.tag, str) and child.tag.startswith("{") and _local(child.tag) == "transcript":
                found.extend(_transcripts_from(dict(child.attrib), base))
        items.append(found)
    return items


def _transcripts_from(raw: Any, base: str) -> list[Transcript]:
    if not isinstance(raw, dict):
        return []
    url = _web_url(raw.get("url"), base)
    kind = _text(raw.get("type")).lower()
    if url is None or not kind:
        return []
    return [Transcript(url=url, type=_TRANSCRIPT_ALIASES.get(kind, kind)[:100])]


def choose_transcript(transcripts: list[Transcript]) -> Transcript | None:
    """The most useful publisher transcript (timed formats first); None if no known format is offered."""
    for wanted in TRANSCRIPT_PREFERENCE:
        for item in transcripts:
            if item.type.split(";")[0].strip() == wanted:
                return item
    return None


_ISO_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?T?(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_duration(value: Any) -> float | None:
    """itunes:duration in any format seen in the wild: "3600", "60:00", "1:00:00", "1:02:03.5", "PT1H2M"."""
    text = _text(value).strip().upper()
    if not text:
        return None
    seconds: float | None = None
    try:
        if ":" in text:
            parts = [float(p) if p else 0.0 for p in text.split(":")]
            if len(parts) <= 3 and all(p >= 0 for p in parts):
                seconds = 0.0
                for part in parts:
                    seconds = seconds * 60 + part
        elif text.startswith("P"):
            match = _ISO_DURATION.match(text)
            if match and any(match.groups()):
                d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
                seconds = d * 86400 + h * 3600 + m * 60 + s
        else:
            seconds = float(text)
    except ValueError:
        return None
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 10 * 365 * 86400:
        return None  # NaN, negative, or absurd: treat as unknown
    return seconds


def _published(entry: Any) -> dt.datetime | None:
    for key in ("published_parsed", "updated_parsed"):
        value = entry.get(key)
        if isinstance(value, time.struct_time):
            try:  # feedparser's struct_time is already UTC
                return dt.datetime.fromtimestamp(calendar.timegm(value), dt.UTC)
            except (OverflowError, ValueError, OSError):
                return None
    return None


def _length(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= _MAX_INT32 else None


def _web_url(value: Any, base: str | None) -> str | None:
    """An absolute http(s) URL, resolved against base, or None."""
    text = _text(value).strip()
    if not text:
        return None
    try:
        absolute = urljoin(base, text) if base else text
        return str(net.check_url(absolute))
    except (PipelineError, ValueError):
        return None


def _file_stem(url: str | None) -> str:
    """'https://cdn/x/Episode%2012.mp3' -> 'Episode 12': a readable title for an untitled item."""
    if not url:
        return ""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name.rsplit(".", 1)[0] if "." in name else name


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------- rows


def normalize_feed_url(url: str) -> str:
    """Canonical form used as Podcast.feed_url: lower-case scheme/host, no default port, no fragment."""
    text = url.strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in _FEED_SCHEMES:  # feed://, itpc://, feed:https://...
        rest = rest.lstrip("/")
        text = rest if rest.startswith(("http://", "https://")) else f"{_FEED_SCHEMES[scheme.lower()]}://{rest}"
    checked = net.check_url(text)
    parts = urlsplit(str(checked))
    netloc = parts.netloc.lower()
    for default in (":80",) if parts.scheme == "http" else (":443",):
        if netloc.endswith(default):
            netloc = netloc[: -len(default)]
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def subscribe(session: Session, feed_url: str) -> Podcast:
    """Get or create the Podcast for feed_url (no fetch). Raises PermanentError for a non-http(s) URL."""
    url = normalize_feed_url(feed_url)
    podcast = session.scalar(select(Podcast).where(Podcast.feed_url == url))
    if podcast is None:
        podcast = Podcast(feed_url=url, status=PodcastStatus.ACTIVE, next_check_at=utcnow())
        session.add(podcast)
        session.flush()
    return podcast


def due(session: Session, now: dt.datetime, limit: int = 100) -> list[int]:
    """Ids of podcasts whose next_check_at has come, oldest first; retired ones never."""
    rows = session.scalars(
        select(Podcast.id)
        .where(Podcast.next_check_at <= now, Podcast.status != PodcastStatus.RETIRED)
        .order_by(Podcast.next_check_at, Podcast.id)
        .limit(limit)
    )
    return list(rows)


def poll(session: Session, podcast_id: int, *, now: dt.datetime | None = None) -> PollResult:
    """Fetch the feed (conditional GET), record new episodes; failures land on the Podcast row."""
    now = now or utcnow()
    podcast = session.get(Podcast, podcast_id)
    if podcast is None:
        return PollResult([], f"podcast {podcast_id} does not exist")
    if podcast.status == PodcastStatus.RETIRED:
        return PollResult([], "podcast is retired")
    podcast.last_checked_at = now
    settings = get_settings()
    try:
        result = net.fetch(
            podcast.feed_url,
            max_bytes=settings.fetch_max_feed_bytes,
            etag=podcast.etag,
            last_modified=podcast.last_modified,
        )
    except net.GoneError as exc:
        return _retire(podcast, exc.reason)
    except PipelineError as exc:
        return _fail(podcast, exc.reason, now)

    if result.permanent_url and not _move(session, podcast, result.permanent_url):
        return PollResult([], podcast.last_error)
    if result.not_modified:
        _succeed(podcast, now)
        return PollResult([], None)
    try:
        parsed = parse_feed(result.content, result.url)
    except PipelineError as exc:
        return _fail(podcast, exc.reason, now)
    except Exception as exc:  # a hostile feed must not crash the worker; the bug still gets logged
        log.exception("feed parse crashed for podcast %s", podcast.id)
        return _fail(podcast, f"feed could not be parsed ({type(exc).__name__})", now)

    podcast.etag = (result.etag or "")[:500] or None
    podcast.last_modified = (result.last_modified or "")[:100] or None
    podcast.title = parsed.title[:500] or podcast.title
    podcast.description = parsed.description or podcast.description
    podcast.site_url = parsed.site_url or podcast.site_url
    podcast.image_url = parsed.image_url or podcast.image_url
    new_ids = _insert_episodes(session, podcast, parsed.episodes)
    if parsed.new_feed_url:
        _move(session, podcast, parsed.new_feed_url)
    if podcast.status != PodcastStatus.RETIRED:
        _succeed(podcast, now)
    return PollResult(new_ids, None)


def _insert_episodes(session: Session, podcast: Podcast, episodes: list[ParsedEpisode]) -> list[int]:
    known = session.execute(select(Episode.guid, Episode.enclosure_url).where(Episode.podcast_id == podcast.id)).all()
    guids = {row.guid for row in known}
    enclosures = {row.enclosure_url for row in known if row.enclosure_url}
    fresh: list[ParsedEpisode] = []
    for item in episodes:
        if item.guid in guids or (item.enclosure_url and item.enclosure_url in enclosures):
            continue  # already known (or a duplicate guid/enclosure inside this same feed)
        if not item.enclosure_url and item.best_transcript is None:
            continue  # nothing we could ever transcribe or read
        guids.add(item.guid)
        if item.enclosure_url:
            enclosures.add(item.enclosure_url)
        fresh.append(item)
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    # Newest first; undated items keep feed order after dated ones (feeds list newest first by convention).
    ranked = sorted(fresh, key=lambda e: e.published or oldest, reverse=True)
    rows: list[Episode] = []
    for rank, item in enumerate(ranked):
        transcript = item.best_transcript
        row = Episode(
            podcast_id=podcast.id,
            guid=item.guid,
            title=item.title[:1000],
            description=item.description,
            link=item.link,
            published_at=item.published,
            enclosure_url=item.enclosure_url,
            enclosure_type=item.enclosure_type,
            enclosure_length=item.enclosure_length,
            duration_seconds=item.duration_seconds,
            transcript_url=transcript.url if transcript else None,
            transcript_type=transcript.type if transcript else None,
            status=EpisodeStatus.NEW if rank < NEW_EPISODES_PER_POLL else EpisodeStatus.SKIPPED,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return [row.id for row in rows if row.status == EpisodeStatus.NEW]


def _move(session: Session, podcast: Podcast, new_url: str) -> bool:
    """Point the podcast at its new feed URL; retire it if that URL is already another podcast."""
    try:
        url = normalize_feed_url(new_url)
    except PipelineError:
        return True  # an unusable new-feed-url is ignored, the current one still works
    if url == podcast.feed_url:
        return True
    other = session.scalar(select(Podcast.id).where(Podcast.feed_url == url, Podcast.id != podcast.id))
    if other is not None:
        podcast.status = PodcastStatus.RETIRED
        podcast.last_error = f"feed moved to {url}, which is already podcast {other}"
        return False
    podcast.feed_url = url
    podcast.etag = None  # validators belong to the old URL
    podcast.last_modified = None
    return True


def _succeed(podcast: Podcast, now: dt.datetime) -> None:
    podcast.status = PodcastStatus.ACTIVE
    podcast.last_error = None
    podcast.error_count = 0
    podcast.next_check_at = now + dt.timedelta(minutes=get_settings().poll_interval_minutes)


def _fail(podcast: Podcast, reason: str, now: dt.datetime) -> PollResult:
    podcast.status = PodcastStatus.ERROR
    podcast.last_error = _one_line(reason, 500)
    podcast.error_count = (podcast.error_count or 0) + 1
    podcast.next_check_at = now + backoff(podcast.error_count)
    return PollResult([], podcast.last_error)


def _retire(podcast: Podcast, reason: str) -> PollResult:
    podcast.status = PodcastStatus.RETIRED
    podcast.last_error = _one_line(reason, 500)
    return PollResult([], podcast.last_error)


def backoff(error_count: int) -> dt.timedelta:
    """5 min after the first failure, doubling, at most a day."""
    exponent = min(max(error_count - 1, 0), 20)
    return min(BACKOFF_FIRST * (2**exponent), BACKOFF_MAX)
