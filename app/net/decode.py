"""Content-Encoding decoding with a hard output cap, and first-bytes sniffing for downloads.

httpx decodes gzip/deflate for us, but one 64 KiB raw chunk of a gzip bomb becomes ~64 MB in one call and
`Content-Encoding: gzip, gzip` stacks multipliers. We decode ourselves with zlib's `max_length`, so no call
ever produces more than the bytes we are still willing to accept (the cap holds *after* decoding).
"""

from __future__ import annotations

import zlib

from app.errors import PermanentError

# What we advertise; anything else the server sends anyway is refused rather than passed on undecoded.
ACCEPT_ENCODING = "gzip, deflate"


class OversizeError(PermanentError):
    """More bytes than the caller's cap (counted after decoding)."""


class BoundedDecoder:
    """Decodes one response body; `feed(data, budget)` never returns or buffers more than budget+1 bytes."""

    def __init__(self, content_encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise PermanentError(f"refused stacked content-encoding: {content_encoding}")
        self.coding = codings[0] if codings else "identity"
        if self.coding in ("gzip", "x-gzip"):
            self.coding = "gzip"
        elif self.coding not in ("identity", "deflate"):
            raise PermanentError(f"unsupported content-encoding: {self.coding}")
        self._obj = self._new()
        self._started = False

    def _new(self, raw_deflate: bool = False) -> zlib._Decompress | None:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.coding == "deflate":
            # RFC says zlib-wrapped; many servers send a raw deflate stream: try zlib first, like httpx does.
            return zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)
        return None

    def feed(self, data: bytes, budget: int) -> bytes:
        """Decode `data`; raise OversizeError as soon as the output would exceed `budget` bytes."""
        if self._obj is None:
            if len(data) > budget:
                raise OversizeError("response exceeds the byte cap")
            return data
        obj = self._obj
        out = bytearray()
        buf = data
        while buf:
            try:
                piece = obj.decompress(buf, budget - len(out) + 1)
            except zlib.error as exc:
                if self.coding == "deflate" and not self._started and not out:
                    self._started = True
                    obj = self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise PermanentError(f"corrupt {self.coding} body: {exc}") from exc
            self._started = True
            out += piece
            if len(out) > budget:
                raise OversizeError("response exceeds the byte cap after decompression")
            if obj.eof:
                buf = obj.unused_data
                if not (buf and self.coding == "gzip"):
                    break  # trailing bytes after a deflate stream are ignored, as browsers do
                obj = self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # concatenated gzip members
            else:
                buf = obj.unconsumed_tail
        return bytes(out)


# Magic numbers of containers podcasts really ship (audio and the odd video enclosure).
_MEDIA_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"ID3", "mp3 (ID3)"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"RIFF", "wav/riff"),
    (0, b"FORM", "aiff"),
    (0, b"\x1a\x45\xdf\xa3", "matroska/webm"),
    (0, b"#!AMR", "amr"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf/wma"),
    (4, b"ftyp", "mp4/m4a"),
)

_MARKUP_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--", b"<rss", b"<feed", b"{", b"[")


def sniff_media(head: bytes) -> str | None:
    """The container a file's first bytes announce, or None when they name none we know."""
    for offset, magic, name in _MEDIA_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mpeg audio (frame sync)"  # MP3 without ID3, or AAC ADTS
    return None


def looks_like_text_page(head: bytes) -> bool:
    """True when the first bytes are an HTML/XML/JSON document (an error page served as audio)."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(_MARKUP_STARTS):
        return True
    # No known magic and almost all printable ASCII: a text body, not compressed audio.
    sample = head[:512]
    if not sample:
        return True
    printable = sum(1 for b in sample if 32 <= b < 127 or b in (9, 10, 13))
    return printable / len(sample) > 0.95
