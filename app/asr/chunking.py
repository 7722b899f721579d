"""Voice activity detection and cutting long audio into <= 30 s windows at pauses.

Whisper's encoder always sees 30 s; windows hold up to SPEECH_SECONDS (25 s) of audio, packed from whole speech
regions (fewer encoder passes), never cut inside speech: window edges fall in pauses. Audio outside speech is
never decoded, so no text over silence. A sentence Whisper still leaves out at a window's end is found by
dropped_tails() and decoded again by the engines.

Two detectors: an energy detector (numpy, relative to the recording's own noise floor; ~1,000x faster than
real time) is the default, because Silero VAD (bundled with faster-whisper, onnxruntime) costs about as
much CPU as tiny.en's decoding itself on 2 cores (4.7 s for a 266 s episode); Silero is kept as an option
(vad="silero") for noisy recordings where energy can't tell speech from a music bed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from app.asr.audio import SAMPLE_RATE

WINDOW_SECONDS = 30.0
# Speech packed into one window; the rest of its 30 s is silence. Whisper leaves out a sentence that runs close
# to the end of its window (it expects the next window to say it): on 28 min of eval episodes, windows packed
# to 30 s lost whole sentences (18.5 % WER vs transcribe()'s 16.6 %); at 25 s, 15.5 %, and 13.5 % with
# second_pass() below (docs/benchmarks.md).
SPEECH_SECONDS = 25.0


def speech_regions(
    audio: np.ndarray,
    *,
    min_silence_ms: int = 500,
    max_speech_s: float = SPEECH_SECONDS - 1.0,
    speech_pad_ms: int = 200,
    threshold: float = 0.5,
) -> list[tuple[float, float]]:
    """(start, end) seconds of speech; long turns are split (at their longest pause) under max_speech_s."""
    if audio.size == 0:
        return []
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return energy_regions(audio, min_silence_ms=min_silence_ms, max_speech_s=max_speech_s)

    options = VadOptions(
        threshold=threshold,
        min_silence_duration_ms=min_silence_ms,
        max_speech_duration_s=max_speech_s,
        speech_pad_ms=speech_pad_ms,
    )
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def energy_regions(
    audio: np.ndarray,
    *,
    min_silence_ms: int = 300,
    max_speech_s: float = SPEECH_SECONDS - 1.0,
    frame_ms: int = 20,
    pad_ms: int = 200,
) -> list[tuple[float, float]]:
    """Speech as frames well above the recording's own noise floor; pauses shorter than min_silence_ms bridged.

    Thresholds are relative (noise floor vs loud speech percentile), so levels and gain don't matter. A turn
    longer than max_speech_s is cut in its longest pause: a cut inside a word loses that word, because
    Whisper leaves a sentence that runs into the end of its 30 s window for the next window to say.
    """
    hop = SAMPLE_RATE * frame_ms // 1000
    n = audio.size // hop
    if n == 0:
        return []
    db = _frame_db(audio, hop)
    floor, loud = np.percentile(db, 10), np.percentile(db, 95)
    if loud - floor < 10:  # flat signal: all silence or all noise; nothing distinguishes speech
        return [] if loud < -60 else [(0.0, audio.size / SAMPLE_RATE)]
    voiced = db > floor + 0.35 * (loud - floor)
    gap = max(1, min_silence_ms // frame_ms)
    regions = _runs(np.flatnonzero(voiced), gap)
    pad = pad_ms // frame_ms
    max_frames = int(max_speech_s * 1000 / frame_ms)
    out: list[tuple[float, float]] = []
    for a, b in regions:
        a, b = max(0, a - pad), min(n, b + 1 + pad)
        while b - a > max_frames:
            cut = _pause_in(voiced, db, a + max_frames // 2, a + max_frames)
            out.append((a * frame_ms / 1000, cut * frame_ms / 1000))
            a = cut
        if b - a >= 100 // frame_ms:
            out.append((a * frame_ms / 1000, b * frame_ms / 1000))
    return out


def _runs(indices: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """(first, last) of each run of sorted frame indices whose neighbours are at most `gap` apart."""
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > gap)
    firsts = indices[np.concatenate(([0], breaks + 1))]
    lasts = indices[np.concatenate((breaks, [indices.size - 1]))]
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def _pause_in(voiced: np.ndarray, db: np.ndarray, lo: int, hi: int) -> int:
    """The middle of the longest unvoiced run in frames [lo, hi); else the quietest 200 ms there."""
    quiet = ~voiced[lo:hi]
    best_len, best_mid, run = 0, -1, 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run > best_len:
            best_len, best_mid = run, i - run // 2
    if best_len >= 2:
        return lo + best_mid
    return lo + _quietest(db[lo:hi])


def _quietest(db: np.ndarray) -> int:
    """Index of the middle of the quietest 200 ms (10 frames of 20 ms) in `db`: a pause, not a gap between two
    phones."""
    return int(np.argmin(np.convolve(db, np.ones(10) / 10, mode="same")))


def pack_windows(
    regions: Sequence[tuple[float, float]], *, max_seconds: float = SPEECH_SECONDS
) -> list[tuple[float, float]]:
    """Greedily merge consecutive speech regions into windows spanning at most max_seconds."""
    windows: list[tuple[float, float]] = []
    for start, end in regions:
        if end - start > max_seconds:  # VAD's max_speech_s should prevent this; cut hard if not
            t = start
            while t < end:
                windows.append((t, min(end, t + max_seconds)))
                t += max_seconds
            continue
        if windows and end - windows[-1][0] <= max_seconds:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def fixed_windows(duration: float, *, max_seconds: float = WINDOW_SECONDS) -> list[tuple[float, float]]:
    """Windows without VAD (vad=False): back-to-back max_seconds pieces."""
    out: list[tuple[float, float]] = []
    t = 0.0
    while t < duration:
        out.append((t, min(duration, t + max_seconds)))
        t += max_seconds
    return out


TAIL_SECONDS = 2.0  # speech left after a window's last segment that is worth a second decode
SPARSE_SECONDS = 6.0  # a segment this long ...
SPARSE_WORDS_PER_SECOND = 1.0  # ... with fewer words than this per second skipped speech (people say 2-3/s)
# A span decoded again is cut at its pauses into pieces of at most this much speech. Given the same 24 s window
# twice, Whisper can skip the same answer twice ("I'm always wondered." again, seen with a bf16 encoder); a
# piece of a dozen seconds leaves it no room to jump over a whole answer.
REDO_SECONDS = 12.0
# A redone tail that repeats a run of the last SEAM_WORDS words before it is dropped (said_before).
SEAM_WORDS = 60
SEAM_MIN_WORDS = 3


class Timed(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...


T = TypeVar("T", bound=Timed)


def dropped_tails(
    windows: Sequence[tuple[float, float]], segments: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """(start, end) of each window's audio after its last decoded segment, where that is TAIL_SECONDS or more.

    Windows end where speech ends (energy_regions), so audio left after the last segment is speech Whisper did
    not say. A window with no segment at all is left alone: that is silence, music or noise the filters dropped.
    """
    tails = []
    for start, end in windows:
        ends = [e for s, e in segments if start - 0.5 <= s < end]
        if ends and end - max(ends) >= TAIL_SECONDS:
            tails.append((max(ends), end))
    return tails


def _words(segments: Sequence[Timed]) -> int:
    return sum(len(s.text.split()) for s in segments)


def is_sparse(segment: Timed) -> bool:
    """A long segment with few words: Whisper jumped over speech ("I'm always wondered." over 24 s of an answer)."""
    duration = segment.end - segment.start
    return duration >= SPARSE_SECONDS and len(segment.text.split()) < SPARSE_WORDS_PER_SECOND * duration


Spans = list[tuple[float, float]]


def split_at_pauses(
    audio: np.ndarray, span: tuple[float, float], *, max_seconds: float = REDO_SECONDS
) -> list[tuple[float, float]]:
    """`span` of `audio` cut at its quietest moments into pieces of at most max_seconds (itself if short).

    A span worth decoding again is usually all speech, so energy_regions' noise floor (a percentile of the span)
    would sit inside the speech; the quietest 200 ms of a stretch is where a breath or a sentence end is.
    """
    start, end = span
    length = end - start
    if length <= max_seconds:
        return [span]
    # The first piece: 40-100 % of the maximum; where two pieces can do (with room to choose), a cut that leaves
    # the rest short enough too. The rest is split the same way.
    lo, hi = 0.4 * max_seconds, max_seconds
    if length <= 1.8 * max_seconds:
        lo = max(lo, length - max_seconds)
    frame = SAMPLE_RATE // 50  # 20 ms
    first, last = int((start + lo) * SAMPLE_RATE), int((start + hi) * SAMPLE_RATE)
    db = _frame_db(audio[first:last], frame)
    if db.size == 0:
        return [span]
    cut = round(start + lo + (_quietest(db) + 0.5) * frame / SAMPLE_RATE, 2)
    return split_at_pauses(audio, (start, cut), max_seconds=max_seconds) + split_at_pauses(
        audio, (cut, end), max_seconds=max_seconds
    )


def _frame_db(audio: np.ndarray, hop: int) -> np.ndarray:
    """Power per frame of `hop` samples, in dB."""
    n = audio.size // hop
    frames = audio[: n * hop].reshape(n, hop)
    # Row-wise sum of squares without a float64 copy of the audio: 20x faster on an hour of audio, same values.
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop
    return np.asarray(10 * np.log10(power + 1e-12))


def second_pass(
    windows: Sequence[tuple[float, float]],
    segments: Sequence[T],
    decode: Callable[[Spans], list[T]],
    *,
    audio: np.ndarray | None = None,
) -> list[T]:
    """Decode again what the first pass over `windows` left unsaid, and merge it in time order.

    Two things independent windows lose that transcribe()'s seeking recovers: the sentence at a window's end
    that Whisper leaves for a next window (dropped_tails), and a stretch of speech covered by one long segment
    of a few words (is_sparse). A sparse segment is replaced only if its second decode says more. Given the
    `audio`, spans longer than REDO_SECONDS are decoded in pieces cut at pauses (split_at_pauses).
    """
    sparse = [i for i, seg in enumerate(segments) if is_sparse(seg)]
    tails = dropped_tails(windows, [(s.start, s.end) for s in segments])
    spans = tails + [(segments[i].start, segments[i].end) for i in sparse]
    if not spans:
        return list(segments)
    if audio is not None:
        spans = [piece for span in spans for piece in split_at_pauses(audio, span)]
    again = decode(spans)
    out = [seg for i, seg in enumerate(segments) if i not in sparse]
    claimed: set[int] = set()
    for i in sparse:
        old = segments[i]
        redone = [j for j, r in enumerate(again) if old.start - 0.5 <= r.start < old.end]
        if _words([again[j] for j in redone]) > _words([old]):
            claimed.update(redone)
        else:
            out.append(old)
            claimed.update(redone)  # the weaker second try is dropped, not added twice
            redone = []
        out.extend(again[j] for j in redone)
    said = sorted(out, key=lambda seg: seg.start)
    out.extend(r for j, r in enumerate(again) if j not in claimed and not said_before(r, said))
    return sorted(out, key=lambda seg: seg.start)


def said_before(segment: Timed, earlier: Sequence[Timed]) -> bool:
    """Whether `segment` (from a redone tail) only repeats what the segments just before it already said.

    A window's last segment can end its timestamps seconds before its speech does (seen on a phone call with
    int8 encoders), so dropped_tails() sends speech that was decoded back for a second decode, which says it again
    ("I'm in New Jersey now, though. Chicago also. I'm in New Jersey now, though."). Such a redo is a run of the
    last SEAM_WORDS words said before its start (compared as the WER compares them: app.asr.wer.normalize); a
    segment of fewer than SEAM_MIN_WORDS words ("Yeah.") is kept, since people do repeat those. `earlier` is in
    time order; only the segments just before `segment` are read (an hour-long episode has a thousand).
    """
    from app.asr.wer import normalize

    words = normalize(segment.text)
    if len(words) < SEAM_MIN_WORDS:
        return False
    before: list[str] = []
    i = bisect.bisect_left(earlier, segment.start, key=lambda seg: seg.start)  # no list of every start
    while i > 0 and len(before) < SEAM_WORDS:
        i -= 1
        before = normalize(earlier[i].text) + before
    before = before[-SEAM_WORDS:]
    n = len(words)
    return any(before[i : i + n] == words for i in range(len(before) - n + 1))
