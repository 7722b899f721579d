"""Publisher transcripts (podcast:transcript): WebVTT, SRT, Podcast Index JSON, HTML and plain text -> segments.

Pure functions over bytes (the pipeline stage fetches). A publisher transcript beats Whisper: it's what the
show says it said, and it costs nothing to "transcribe". Formats without times (HTML without <time>, plain text)
get times estimated from a typical speaking rate so that segments still order and roughly locate the text.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from html.parser import HTMLParser

from app.asr.types import Segment
from app.errors import PermanentError

WORDS_PER_SECOND = 2.5  # ~150 words a minute, conversational speech
MAX_MERGED_WORDS = 40  # word-level JSON is grouped into sentence-ish segments of at most this many words
MAX_GAP_SECONDS = 1.5

_KINDS = {
    "text/vtt": "vtt",
    "text/webvtt": "vtt",
    "application/x-subrip": "srt",
    "application/srt": "srt",
    "text/srt": "srt",
    "application/x-srt": "srt",
    "application/json": "json",
    "text/json": "json",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/plain": "text",
}


def detect_kind(mime: str | None, data: bytes) -> str:
    """The format from the feed's declared type, else from the content itself."""
    declared = (mime or "").split(";")[0].strip().lower()
    if declared in _KINDS:
        return _KINDS[declared]
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"WEBVTT"):
        return "vtt"
    if head[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"<":
        return "html"
    if re.search(rb"\d\d:\d\d:\d\d,\d{3}\s*-->", head):
        return "srt"
    return "text"


MAX_BINARY_SHARE = 0.02


def _binary_share(text: str) -> float:
    """Share of characters that no transcript contains: undecodable bytes and control characters."""
    if not text:
        return 0.0
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\r\t\f"))
    return bad / len(text)


def parse(data: bytes, mime: str | None = None) -> tuple[str, list[Segment]]:
    """(kind, segments) for a publisher transcript; PermanentError when it holds no usable text."""
    kind = detect_kind(mime, data)
    text = data.decode("utf-8-sig", errors="replace")
    if _binary_share(text) > MAX_BINARY_SHARE:
        # Bytes that are not text (an image, a zip, a truncated binary) would otherwise pass as a "text"
        # transcript full of control characters and replacement marks, and skip Whisper.
        raise PermanentError(f"publisher transcript ({kind}) is not text")
    parsers = {"vtt": parse_vtt, "srt": parse_srt, "json": parse_json, "html": parse_html, "text": parse_text}
    segments = parsers[kind](text)
    segments = [s for s in segments if s.text]
    if not segments:
        raise PermanentError(f"publisher transcript ({kind}) has no text")
    return kind, segments


# --- timed formats ----------------------------------------------------------------------------------
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]+>")
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub("", text))).strip()


def _cues(text: str) -> list[Segment]:
    """Shared by VTT and SRT: blocks whose timing line is `start --> end`, then text lines."""
    out: list[Segment] = []
    for block in re.split(r"\r?\n\s*\r?\n", text.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        for i, line in enumerate(lines):
            m = _CUE.match(line)
            if not m:
                continue
            start, end = _seconds(*m.group(1, 2, 3, 4)), _seconds(*m.group(5, 6, 7, 8))
            body = "\n".join(lines[i + 1 :])
            voice = _VOICE.search(body)
            speaker = voice.group(1).strip() if voice else None
            out.append(Segment(start=start, end=max(start, end), text=_clean(body), speaker=speaker))
            break
    return out


def parse_vtt(text: str) -> list[Segment]:
    if not text.lstrip().startswith("WEBVTT"):
        raise PermanentError("not a WebVTT file (no WEBVTT header)")
    return _merge_speaker_prefix(_cues(text))


def parse_srt(text: str) -> list[Segment]:
    return _merge_speaker_prefix(_cues(text))


_SPEAKER_PREFIX = re.compile(r"^([A-Z][\w.' -]{0,40}):\s+(.*)$")


def _merge_speaker_prefix(segments: list[Segment]) -> list[Segment]:
    """'Jane Doe: text' cue bodies carry the speaker in the text; move it to .speaker."""
    out = []
    for seg in segments:
        m = _SPEAKER_PREFIX.match(seg.text)
        if seg.speaker is None and m:
            seg = replace(seg, speaker=m.group(1).strip(), text=m.group(2).strip())
        out.append(seg)
    return out


def parse_json(text: str) -> list[Segment]:
    """Podcast Index JSON: {"version": ..., "segments": [{"startTime", "endTime", "body", "speaker"?}]}.

    Many publishers emit one segment per word; those are grouped into sentence-sized segments per speaker.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"publisher JSON transcript is not valid JSON: {exc.msg}") from exc
    items = doc.get("segments") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise PermanentError("publisher JSON transcript has no segments list")
    raw: list[Segment] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        body = _clean(str(item.get("body", "")))
        try:
            start = float(item.get("startTime", 0.0))
            end = float(item.get("endTime", start))
        except (TypeError, ValueError):
            continue
        speaker = item.get("speaker")
        raw.append(Segment(start=start, end=max(start, end), text=body, speaker=str(speaker) if speaker else None))
    return _group_words(raw)


def _group_words(raw: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in raw:
        if not seg.text:
            continue
        if out:
            prev = out[-1]
            joinable = (
                prev.speaker == seg.speaker
                and seg.start - prev.end <= MAX_GAP_SECONDS
                and not re.search(r"[.!?]['\"]?$", prev.text)
                and len(prev.text.split()) + len(seg.text.split()) <= MAX_MERGED_WORDS
            )
            if joinable:
                out[-1] = replace(prev, end=max(prev.end, seg.end), text=f"{prev.text} {seg.text}")
                continue
        out.append(seg)
    return out


# --- untimed formats ---------------------------------------------------------------------------------
class _BlockText(HTMLParser):
    """Text per block element (p, li, div, h*, tr ...), with <cite> speakers and <time> stamps where given."""

    BLOCKS = frozenset({"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br", "section", "article"})
    SKIP = frozenset({"script", "style", "head", "title", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str | None, float | None, str]] = []
        self._text: list[str] = []
        self._speaker: str | None = None
        self._time: float | None = None
        self._in: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCKS:
            self._flush()
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        if tag in self.BLOCKS:
            self._flush()
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag)]

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        inner = self._in[-1] if self._in else ""
        if inner == "cite":
            self._speaker = data.strip().rstrip(":").strip() or self._speaker
            return
        if inner == "time":
            stamp = _parse_clock(data.strip())
            if stamp is not None:
                self._time = stamp
                return
        self._text.append(data)

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._text)).strip()
        if text:
            self.blocks.append((self._speaker, self._time, text))
            self._time = None
        self._text = []

    def close(self) -> None:
        super().close()
        self._flush()


def _parse_clock(value: str) -> float | None:
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:[.,](\d{1,3}))?", value)
    if not m:
        return None
    return _seconds(m.group(1), m.group(2), m.group(3), m.group(4) or "0")


def _with_estimated_times(blocks: list[tuple[str | None, float | None, str]]) -> list[Segment]:
    """Stated times where the document gives them; elsewhere time runs on at WORDS_PER_SECOND."""
    out: list[Segment] = []
    clock = 0.0
    for speaker, stated, text in blocks:
        start = stated if stated is not None and stated >= clock else clock
        end = start + len(text.split()) / WORDS_PER_SECOND
        out.append(Segment(start=round(start, 2), end=round(end, 2), text=text, speaker=speaker))
        clock = end
    return out


def parse_html(text: str) -> list[Segment]:
    parser = _BlockText()
    parser.feed(text)
    parser.close()
    blocks = []
    for speaker, stamp, body in parser.blocks:
        m = _SPEAKER_PREFIX.match(body)
        if m:  # "Name: text" in the paragraph itself names the speaker from here on
            speaker, body = m.group(1).strip(), m.group(2).strip()
        blocks.append((speaker, stamp, body))
    return _with_estimated_times(blocks)


def parse_text(text: str) -> list[Segment]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) <= 1:
        paragraphs = [line.strip() for line in text.splitlines() if line.strip()]
    blocks: list[tuple[str | None, float | None, str]] = []
    for para in paragraphs:
        body = re.sub(r"\s+", " ", para)
        m = _SPEAKER_PREFIX.match(body)
        blocks.append((m.group(1).strip(), None, m.group(2).strip()) if m else (None, None, body))
    return _with_estimated_times(blocks)
