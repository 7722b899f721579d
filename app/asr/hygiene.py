"""Long-audio hygiene: the ways Whisper goes wrong on hour-long podcasts, and the filters that catch them.

- Loops: the decoder repeats a phrase ("thank you. thank you. thank you ...") -> collapse the run to one copy,
  both inside one segment and across consecutive identical segments.
- Hallucination over silence/music: text where VAD found no speech, or a segment the model itself thinks is
  no-speech with low confidence -> dropped.
- Garbage: very high gzip compression ratio (repetitive text) with low confidence -> dropped.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import replace

from app.asr.types import Segment

# Thresholds match openai-whisper's own fallback rules (transcribe.py), so the filters agree with its decoding.
COMPRESSION_RATIO_MAX = 2.4
LOGPROB_MIN = -1.0
NO_SPEECH_MIN = 0.6
MIN_REPEATS = 3  # a phrase said this many times in a row is a loop, not emphasis
MAX_PHRASE_WORDS = 12


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def collapse_repeats(text: str, *, min_repeats: int = MIN_REPEATS, max_words: int = MAX_PHRASE_WORDS) -> str:
    """Keep one copy of any 1..max_words-word phrase repeated >= min_repeats times back to back."""
    words = text.split()
    if len(words) < min_repeats:
        return text.strip()
    keys = [_norm(w) for w in words]
    out: list[str] = []
    out_keys: list[str] = []
    i = 0
    while i < len(words):
        collapsed = False
        for n in range(1, max_words + 1):
            if i + n * min_repeats > len(words):
                break
            phrase = keys[i : i + n]
            if not any(phrase):
                continue
            reps = 1
            while keys[i + reps * n : i + (reps + 1) * n] == phrase:
                reps += 1
            if reps >= min_repeats:
                out.extend(words[i : i + n])
                out_keys.extend(phrase)
                i += reps * n
                collapsed = True
                break
        if not collapsed:
            out.append(words[i])
            out_keys.append(keys[i])
            i += 1
    return " ".join(out)


def _overlaps_speech(seg: Segment, speech: Sequence[tuple[float, float]], min_overlap: float) -> bool:
    covered = sum(max(0.0, min(seg.end, e) - max(seg.start, s)) for s, e in speech)
    return covered >= min(min_overlap, max(0.0, seg.end - seg.start) * 0.5)


def clean_segments(
    segments: Sequence[Segment],
    *,
    speech: Sequence[tuple[float, float]] | None = None,
    min_speech_overlap: float = 0.2,
) -> list[Segment]:
    """Apply every filter above; `speech` are VAD (start, end) seconds when the caller ran VAD."""
    kept: list[Segment] = []
    for seg in segments:
        text = collapse_repeats(seg.text)
        if not text:
            continue
        if speech is not None and not _overlaps_speech(seg, speech, min_speech_overlap):
            continue
        logprob = seg.avg_logprob
        if (
            seg.no_speech_prob is not None
            and logprob is not None
            and seg.no_speech_prob > NO_SPEECH_MIN
            and logprob < LOGPROB_MIN
        ):
            continue
        # The decoder's own ratio (or the raw text's): measured before collapsing, which would hide the loop.
        ratio = seg.compression_ratio if seg.compression_ratio is not None else compression_ratio(seg.text)
        if ratio > COMPRESSION_RATIO_MAX and (logprob is None or logprob < LOGPROB_MIN):
            continue
        kept.append(replace(seg, text=text) if text != seg.text else seg)
    return _end_before_next(_collapse_segment_loops(kept))


def _end_before_next(segments: list[Segment]) -> list[Segment]:
    """A segment's end cut back to where the next one starts: Whisper may time a window's last segment past the
    window's audio (into the silence it was padded with), so it ran 0.5 s into the next window's first."""
    out = list(segments)
    for i in range(len(out) - 1):
        nxt = out[i + 1].start
        if out[i].start < nxt < out[i].end:
            out[i] = replace(out[i], end=nxt)
    return out


def _collapse_segment_loops(segments: list[Segment]) -> list[Segment]:
    """The same short line >= MIN_REPEATS segments in a row is a loop: keep the first, stretched over the run.

    Two in a row stays (two speakers both saying "Hello?" is real).
    """
    out: list[Segment] = []
    i = 0
    while i < len(segments):
        key = " ".join(_norm(w) for w in segments[i].text.split())
        j = i + 1
        while j < len(segments) and " ".join(_norm(w) for w in segments[j].text.split()) == key:
            j += 1
        if j - i >= MIN_REPEATS and len(key.split()) <= MAX_PHRASE_WORDS:
            out.append(replace(segments[i], end=max(s.end for s in segments[i:j])))
        else:
            out.extend(segments[i:j])
        i = j
    return out
