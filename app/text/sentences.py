"""Sentence splitting over timed transcript segments.

Transcripts arrive in two shapes: Whisper segments that cut sentences in half, and publisher (or eval)
segments that each hold a whole speaker turn of several sentences. Both are handled the same way: the segment
texts are joined into one string, pysbd splits that string (so a sentence cut across two Whisper segments comes
back whole), and each sentence's character span is mapped back to seconds by interpolating by characters inside
the segment that holds each end of the span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class TimedText:
    """One transcript segment: its text and where it sits in the audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float
    end: float
    # Index of the segment holding the sentence's first character, and of the one holding its last.
    first_segment: int
    last_segment: int


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd

    # clean=False keeps the text byte-for-byte so char spans index into our string.
    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def split_text(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences of `text`, trailing whitespace excluded."""
    spans: list[tuple[int, int]] = []
    if not text.strip():
        return spans
    for span in _segmenter().segment(text):
        start, end = int(span.start), int(span.end)
        while end > start and text[end - 1].isspace():
            end -= 1
        while start < end and text[start].isspace():
            start += 1
        if end > start:
            spans.append((start, end))
    return spans


_TERMINAL = (".", "!", "?", "…", '"', "'", ")")
_NOT_A_START = {"I", "I'm", "I've", "I'd", "I'll"}


def _implied_stop(text: str, following: str) -> bool:
    """ASR segments often end a sentence without punctuation; the next one opening with a capital says so.

    Whisper capitalises sentence starts, so "...instant return" + "Free money, I love..." is two sentences;
    without the stop pysbd would run them together. "I" opens mid-sentence too often to count.
    """
    if not text or not following or text.endswith(_TERMINAL) or text.endswith((",", ";", ":", "-")):
        return False
    first = following.split()[0]
    return first[:1].isupper() and first not in _NOT_A_START


def split_segments(segments: Sequence[TimedText]) -> list[Sentence]:
    """Sentences of the joined segments, each with start/end seconds inside the segments it came from."""
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []  # [start, end) of each segment's text in the joined string
    pos = 0
    for k, seg in enumerate(segments):
        text = " ".join(seg.text.split())
        nxt = segments[k + 1].text.strip() if k + 1 < len(segments) else ""
        if _implied_stop(text, nxt):
            text += "."
        offsets.append((pos, pos + len(text)))
        parts.append(text)
        pos += len(text) + 1
    joined = " ".join(parts)

    def locate(char: int) -> int:
        # Segments are few (hundreds); a linear scan from a moving cursor would be faster but this is clearer.
        lo, hi = 0, len(offsets) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if offsets[mid][0] <= char:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def time_at(seg_i: int, char: int) -> float:
        seg = segments[seg_i]
        a, b = offsets[seg_i]
        frac = 0.0 if b <= a else min(1.0, max(0.0, (char - a) / (b - a)))
        return float(seg.start + frac * max(0.0, seg.end - seg.start))

    sentences: list[Sentence] = []
    last_end = segments[0].start if segments else 0.0
    for a, b in split_text(joined):
        si, ei = locate(a), locate(b - 1)
        start = max(time_at(si, a), last_end)  # keep times monotonic even if segments overlap slightly
        end = max(time_at(ei, b), start)
        sentences.append(Sentence(joined[a:b], start, end, si, ei))
        last_end = end
    return sentences
