"""Engines on real speech (jfk 11 s + two LibriVox clips): WER bounds, batched == sequential, timestamps.

GPU path: no GPU here, so the openai-whisper batched path (the one CUDA machines use) runs with device="cpu"
through the same code; scripts/gpu_bench.sh runs it on CUDA.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.asr.audio import SAMPLE_RATE, load_audio
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.engines.openai import OpenAIWhisperEngine, split_on_timestamps
from app.asr.hygiene import clean_segments
from app.asr.wer import corpus_wer, find_reference, wer

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = [
    "jfk.mp3",
    "sense_and_sensibility_01_austen_64kb-0880.wav",
    "sense_and_sensibility_01_austen_64kb-0930.wav",
]
# tiny.en greedy on these clips: openai-whisper 0 errors in 38 words, faster-whisper int8 1-2 ("ill disposed").
WER_BOUND = 0.12


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, str]]:
    out = []
    for name in CLIPS:
        ref = find_reference(SPEECH / name)
        assert ref
        out.append((load_audio(SPEECH / name), ref))
    return out


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai-whisper")


@pytest.fixture(scope="module")
def sequential(checkpoint_dir: Path) -> OpenAIWhisperEngine:
    return OpenAIWhisperEngine(mode="sequential", cache_dir=checkpoint_dir)


@pytest.fixture(scope="module")
def batched(checkpoint_dir: Path) -> OpenAIWhisperEngine:
    return OpenAIWhisperEngine(mode="batched", batch_size=4, cache_dir=checkpoint_dir, device="cpu")


def _texts(engine: object, clips: list[tuple[np.ndarray, str]]) -> list[str]:
    return [" ".join(s.text for s in clean_segments(engine.transcribe(a))) for a, _ in clips]  # type: ignore[attr-defined]


def _check_times(segments: list, duration: float) -> None:
    assert segments
    for seg in segments:
        assert 0.0 <= seg.start <= seg.end <= duration + 0.05
    starts = [s.start for s in segments]
    assert starts == sorted(starts)


@pytest.mark.slow
def test_faster_whisper_wer_and_timestamps(clips: list[tuple[np.ndarray, str]]) -> None:
    engine = FasterWhisperEngine("tiny.en", batch_size=4)
    texts = _texts(engine, clips)
    assert corpus_wer([(ref, hyp) for (_, ref), hyp in zip(clips, texts, strict=True)]) <= WER_BOUND
    jfk = clips[0][0]
    segments = engine.transcribe(jfk, word_timestamps=True)
    _check_times(segments, jfk.size / SAMPLE_RATE)
    words = [w for s in segments for w in s.words]
    assert len(words) >= 20 and all(w.start <= w.end for w in words)


@pytest.mark.slow
def test_openai_batched_matches_sequential(
    clips: list[tuple[np.ndarray, str]], sequential: OpenAIWhisperEngine, batched: OpenAIWhisperEngine
) -> None:
    seq_texts = _texts(sequential, clips)
    bat_texts = _texts(batched, clips)
    refs = [ref for _, ref in clips]
    assert corpus_wer(list(zip(refs, seq_texts, strict=True))) <= WER_BOUND
    assert corpus_wer(list(zip(refs, bat_texts, strict=True))) <= WER_BOUND
    # Same weights, same greedy decoding: the batched path says what the sequential one says.
    assert corpus_wer(list(zip(seq_texts, bat_texts, strict=True))) <= 0.05


@pytest.mark.slow
def test_openai_batched_timestamps_and_words(clips: list[tuple[np.ndarray, str]], batched: OpenAIWhisperEngine) -> None:
    # Two clips back to back with 2 s of silence: two windows in one batch, times offset correctly.
    a, b = clips[1][0], clips[0][0]
    gap = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([a, gap, b])
    segments = batched.transcribe(audio, word_timestamps=True)
    _check_times(segments, audio.size / SAMPLE_RATE)
    jfk_start = (a.size + gap.size) / SAMPLE_RATE
    first_jfk = next(s for s in segments if "fellow" in s.text.lower())
    assert first_jfk.start >= jfk_start - 0.6
    assert wer(clips[1][1] + " " + clips[0][1], " ".join(s.text for s in segments)) <= WER_BOUND
    words = [w for s in segments for w in s.words]
    assert words and all(s.start - 0.5 <= w.start for s in segments for w in s.words)


@pytest.mark.slow
def test_vectorised_timestamp_rules_decode_identically(
    clips: list[tuple[np.ndarray, str]], batched: OpenAIWhisperEngine
) -> None:
    audio = clips[0][0]
    windows = [(0.0, 5.5), (5.0, 11.0), (0.0, 3.0)]
    mels = batched._mels(audio, windows)
    fast = batched._run_task(mels, 0.0)
    batched.vectorised_rules = False
    try:
        slow = batched._run_task(mels, 0.0)
    finally:
        batched.vectorised_rules = True
    assert [r.tokens for r in fast] == [r.tokens for r in slow]
    assert [r.avg_logprob for r in fast] == pytest.approx([r.avg_logprob for r in slow], abs=1e-5)
    assert any(t >= 50363 for r in fast for t in r.tokens)  # timestamp tokens were emitted


def test_batched_log_mel_equals_whisper_per_window(clips: list[tuple[np.ndarray, str]]) -> None:
    import torch
    import whisper

    from app.asr.engines.openai import batched_log_mel

    audio = np.concatenate([clips[0][0], clips[1][0]])
    end = audio.size / SAMPLE_RATE
    # Short, long (25 s), tiny, and one running past the end of the audio.
    windows = [(0.0, 5.5), (1.0, 26.0), (10.0, 10.3), (end - 3.0, end + 2.0)]
    mels = batched_log_mel(torch.from_numpy(audio), windows, 80)
    assert mels.shape == (4, 80, whisper.audio.N_FRAMES)
    for row, (start, stop) in enumerate(windows):
        piece = audio[int(start * SAMPLE_RATE) : int(stop * SAMPLE_RATE)]
        ref = whisper.log_mel_spectrogram(piece, 80, padding=whisper.audio.N_SAMPLES)[:, : whisper.audio.N_FRAMES]
        assert torch.allclose(mels[row], ref, atol=1e-5), row


def test_the_cpu_engines_log_mel_skips_the_padding_and_is_exactly_the_full_one(
    clips: list[tuple[np.ndarray, str]],
) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    from app.asr.engines.faster import _SilencePadded

    plain, skipping = FeatureExtractor(), _SilencePadded(FeatureExtractor())
    transformed: list[int] = []  # samples of each signal the STFT itself was given

    def counting_stft(signal: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        transformed.append(signal.size)
        return FeatureExtractor.stft(signal, *args, **kwargs)

    skipping.inner.stft = functools.partial(skipping.inner.stft.func, counting_stft)
    speech = clips[0][0]
    n = plain.n_samples
    # Lengths around the STFT's frame grid and its reflected end, real speech, a window ending in zeros of its
    # own, silence only, and a full 30 s window (nothing to skip).
    pieces = [speech[:1], speech[:399], speech[:400], speech[:401], speech[: 3 * SAMPLE_RATE + 77], speech]
    pieces += [np.concatenate([speech[: 2 * SAMPLE_RATE], np.zeros(5000, np.float32)]), np.zeros(8000, np.float32)]
    pieces += [np.resize(speech, n)]
    for piece in pieces:
        expected = plain(piece, padding=160 + n - piece.size if piece.size < n else 160)
        got = skipping(piece)
        assert got.shape == expected.shape == (80, 3001)
        assert np.array_equal(got, expected), piece.size
    # A 3 s piece: its STFT saw the piece and a little silence (not 30 s); the 30 s window: everything.
    assert transformed[4] < 4 * SAMPLE_RATE
    assert transformed[8] == n + 160
    # Loud noise cut off at every offset of the hop: the last frames that reach the signal's end, and the STFT's
    # reflection of it, are above the spectrogram's floor, so a frame computed from other samples would show.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE + 160).astype(np.float32)
    for offset in range(160):
        piece = noise[: SAMPLE_RATE + offset]
        assert np.array_equal(skipping(piece), plain(piece, padding=160 + n - piece.size)), offset


def test_split_on_timestamps() -> None:
    tb = 1000
    tokens = [tb + 0, 1, 2, tb + 150, tb + 150, 3, tb + 400, 4, 5]
    assert split_on_timestamps(tokens, tb, 9.0) == [(0.0, 3.0, [1, 2]), (3.0, 8.0, [3]), (8.0, 9.0, [4, 5])]


def test_split_even_keeps_order_and_balance() -> None:
    from app.asr.engines.faster import split_even

    assert split_even(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split_even([1], 4) == [[1]]
    assert split_even([], 2) == [[]]
    runs = split_even(list(range(10)), 4)
    assert [x for r in runs for x in r] == list(range(10))
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_cpu_layout_prefers_single_threaded_workers() -> None:
    from app.asr.engines.faster import cpu_layout

    assert cpu_layout(1) == (1, 1)
    assert cpu_layout(2) == (2, 1)
    assert cpu_layout(16) == (4, 4)


@pytest.mark.slow
def test_faster_whisper_parallel_workers_match_one_worker(clips: list[tuple[np.ndarray, str]]) -> None:
    # ~70 s of speech: three windows, so two workers each get a run of windows.
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([part for _ in range(3) for a, _ in clips for part in (a, gap)])
    one = FasterWhisperEngine("tiny.en", batch_size=2, cpu_threads=1)
    two = FasterWhisperEngine("tiny.en", batch_size=2, cpu_threads=2)
    assert (one.workers, two.workers) == (1, 2)
    seen: list[float] = []
    segs_one = one.transcribe(audio)
    segs_two = two.transcribe(audio, progress=seen.append)
    _check_times(segs_two, audio.size / SAMPLE_RATE)
    assert segs_two[-1].end > 60.0  # the last window's segments came back, with absolute times
    text_one = " ".join(s.text for s in segs_one)
    text_two = " ".join(s.text for s in segs_two)
    assert wer(text_one, text_two) <= 0.02
    refs = " ".join(ref for _ in range(3) for _, ref in clips)
    assert wer(refs, text_two) <= WER_BOUND
    assert seen and seen == sorted(seen) and seen[-1] <= audio.size / SAMPLE_RATE + 0.05


def test_dropped_tails_finds_speech_left_after_the_last_segment() -> None:
    from app.asr.chunking import dropped_tails

    windows = [(0.0, 24.0), (24.5, 48.0), (50.0, 60.0)]
    segments = [(0.0, 10.0), (10.0, 23.5), (24.5, 40.0)]  # window 2 stops 8 s early, window 3 said nothing
    assert dropped_tails(windows, segments) == [(40.0, 48.0)]
    assert dropped_tails(windows[:1], segments[:2]) == []  # 0.5 s short of the end is just the pause


def test_faster_whisper_decodes_dropped_tails_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first pass over a window leaves its last 6 s out (as Whisper does); the tail pass says it, in order."""
    import faster_whisper
    from faster_whisper.transcribe import Segment as FwSegment

    calls: list[list[tuple[float, float]]] = []

    class Pipeline:
        def __init__(self, model: object) -> None:
            pass

        def transcribe(self, audio: np.ndarray, *, clip_timestamps: list[dict[str, float]], **_: object):  # type: ignore[no-untyped-def]
            spans = [(c["start"], c["end"]) for c in clip_timestamps]
            calls.append(spans)
            first = len(calls) == 1
            segs = []
            for s, e in spans:
                end = e - 6.0 if first and e - s > 10 else e
                segs.append(
                    FwSegment(
                        id=0,
                        seek=0,
                        start=s,
                        end=end,
                        text="".join(f" w{s:.0f}_{i}" for i in range(int(2.5 * (end - s)))),  # new words each
                        tokens=[],
                        avg_logprob=-0.2,
                        compression_ratio=1.0,
                        no_speech_prob=0.0,
                        words=None,
                        temperature=0.0,
                    )
                )
            return iter(segs), None

    monkeypatch.setattr(faster_whisper, "BatchedInferencePipeline", Pipeline)
    engine = FasterWhisperEngine("tiny.en", batch_size=4, cpu_threads=1, encoder="ctranslate2")
    engine._model = object()  # loaded: transcribe() must not load the real model here
    windows = [(0.0, 20.0), (20.5, 24.0)]
    segs = list(engine._decode_windows(np.zeros(16000 * 25, np.float32), windows, {}, None))
    assert calls == [windows, [(14.0, 20.0)]]  # only the long window's missing 6 s went back
    assert [(s.start, s.end) for s in segs] == [(0.0, 14.0), (14.0, 20.0), (20.5, 24.0)]


@dataclass(frozen=True)
class _Seg:
    start: float
    end: float
    text: str


def test_second_pass_replaces_a_sparse_segment_only_when_the_redo_says_more() -> None:
    from app.asr.chunking import second_pass

    windows = [(0.0, 30.0)]
    first = [_Seg(0.0, 5.0, "one two three four five six seven"), _Seg(5.0, 29.0, "I'm always wondered.")]
    asked: list[list[tuple[float, float]]] = []

    def redo(spans: list[tuple[float, float]]) -> list[_Seg]:
        asked.append(spans)
        return [_Seg(5.0, 16.0, "and quarantine " * 12), _Seg(16.0, 29.0, "comes from forty days " * 8)]

    out = second_pass(windows, first, redo)
    assert asked == [[(5.0, 29.0)]]
    assert [s.start for s in out] == [0.0, 5.0, 16.0] and "always wondered" not in " ".join(s.text for s in out)

    out = second_pass(windows, first, lambda spans: [_Seg(5.0, 29.0, "hm")])  # the redo is no better
    assert out == first


def test_second_pass_drops_a_redone_tail_that_repeats_the_window_end_and_keeps_new_speech() -> None:
    """A window's last segment whose timestamps end early makes its speech look undecoded; the redo says it again."""
    from app.asr.chunking import second_pass

    windows = [(0.0, 20.0), (20.5, 30.0)]
    first = [
        _Seg(0.0, 6.0, "And I'm Sheila and Texas, originally from Chicago."),
        _Seg(6.0, 12.0, "Oh, I'm originally from Chicago also. I'm in New Jersey now, though."),
        _Seg(20.5, 30.0, "Well, there isn't that much difference."),
    ]
    repeat = [_Seg(12.0, 15.0, "originally from Chicago also."), _Seg(15.0, 19.0, "I'm in New Jersey now though!")]
    out = second_pass(windows, first, lambda spans: repeat)
    assert out == first  # both pieces of the redo only repeat the window's end (case and punctuation aside)

    new = [_Seg(12.0, 15.0, "So what brought you to New Jersey?")]
    assert [s.text for s in second_pass(windows, first, lambda spans: new)][2] == new[0].text
    # Fewer than 3 words are kept even when they repeat: people do say "Now, though." twice.
    short = [_Seg(12.0, 13.0, "now, though.")]
    assert [s.text for s in second_pass(windows, first, lambda spans: short)][2] == "now, though."


def test_second_pass_leaves_good_windows_alone() -> None:
    from app.asr.chunking import second_pass

    first = [_Seg(0.0, 8.0, "w " * 20), _Seg(8.0, 19.5, "w " * 30)]

    def never(spans: list[tuple[float, float]]) -> list[_Seg]:
        raise AssertionError(f"decoded again: {spans}")

    assert second_pass([(0.0, 20.0)], first, never) == first


@dataclass
class _Attempt:
    avg_logprob: float
    compression_ratio: float = 1.5
    no_speech_prob: float = 0.0
    tag: str = ""


def test_pick_attempt_first_passing_else_likeliest_non_loop() -> None:
    from app.asr.engines.openai import pick_attempt

    bad, ok_late, ok_later = _Attempt(-1.4, tag="t0"), _Attempt(-0.6, tag="t0.4"), _Attempt(-0.2, tag="t0.6")
    assert pick_attempt([bad, ok_late, ok_later]).tag == "t0.4"  # transcribe()'s order, not the best score
    loop = _Attempt(-0.3, compression_ratio=3.1, tag="loop")  # likeliest of all, but a repetition loop
    weak, weaker = _Attempt(-1.2, tag="weak"), _Attempt(-2.5, tag="t1.0")
    assert pick_attempt([weak, loop, weaker]).tag == "weak"  # not the last (t=1.0) and not the loop
    assert pick_attempt([_Attempt(-1.5, 3.0, tag="a"), _Attempt(-1.1, 2.9, tag="b")]).tag == "b"


@pytest.mark.parametrize(("parallel", "batch_size"), [(True, 16), (False, 16), (True, 8)])
def test_fallback_decodes_only_failing_windows(parallel: bool, batch_size: int) -> None:
    """GPU: every temperature in one batch; CPU, or more rows than a batch: one temperature after another,
    stopping when a window passes."""
    engine = OpenAIWhisperEngine(mode="batched", device="cpu", batch_size=batch_size)
    engine.parallel_fallback = parallel
    calls: list[tuple[list[int], object]] = []

    def run_task(mels: np.ndarray, temperature: object, sample_len: int | None = None) -> list[_Attempt]:
        rows = [int(m) for m in mels]
        calls.append((rows, temperature))
        if temperature == 0.0:
            return [_Attempt(-0.3 if r == 0 else -1.5, tag=f"{r}@0") for r in rows]
        temps = temperature if isinstance(temperature, list) else [temperature] * len(rows)
        # Window 1 passes from 0.4 on; window 2 never does (its likeliest try is at 0.2).
        return [
            _Attempt(-0.5 if (r == 1 and t >= 0.4) else (-1.1 if t == 0.2 else -1.6), tag=f"{r}@{t}")
            for r, t in zip(rows, temps, strict=True)
        ]

    engine._run_task = run_task  # type: ignore[method-assign]
    mels = np.arange(3)
    picked = engine._fallback(mels, run_task(mels, 0.0))
    assert [p.tag for p in picked] == ["0@0", "1@0.4", "2@0.2"]
    retried = calls[1:]
    if parallel and batch_size >= 10:  # 2 windows x 5 temperatures fit in one batch
        assert len(retried) == 1
        rows, temps = retried[0]
        assert rows == [1, 2] * 5 and temps == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0]
    else:
        # 0.2: windows 1, 2; 0.4: both (1 passes); 0.6 .. 1.0: window 2 only.
        assert [(rows, t) for rows, t in retried] == [([1, 2], 0.2), ([1, 2], 0.4), ([2], 0.6), ([2], 0.8), ([2], 1.0)]


@pytest.mark.slow
def test_per_row_temperatures_decode_real_audio(
    clips: list[tuple[np.ndarray, str]], batched: OpenAIWhisperEngine
) -> None:
    import torch

    torch.manual_seed(0)
    mels = batched._mels(clips[0][0], [(0.0, 11.0)] * 3)
    cool, _, hot = batched._run_task(mels, [0.2, 0.6, 1.0])
    assert wer(clips[0][1], cool.text) <= 0.3
    assert cool.avg_logprob > hot.avg_logprob  # each row sampled at its own temperature


def test_token_budget_follows_duration_and_caps_at_whispers_own() -> None:
    from app.asr.engines.openai import MAX_SAMPLE_LEN, token_budget

    assert token_budget(2.0) == 32
    assert token_budget(10.0) == 96
    assert token_budget(25.0) == 216  # a full window of fast speech (~5.5 tokens/s) fits with room
    assert token_budget(30.0) == token_budget(600.0) == MAX_SAMPLE_LEN


@pytest.mark.slow
def test_second_pass_decodes_once_and_drops_loops(
    clips: list[tuple[np.ndarray, str]], batched: OpenAIWhisperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fallback=False (the second pass): one greedy decode, no temperature retries, a repetition loop dropped."""
    audio = clips[0][0]
    real = batched._run_task
    calls: list[object] = []

    def run_task(mels: object, temperature: object, sample_len: int | None = None) -> list[object]:
        calls.append((temperature, sample_len))
        results = real(mels, temperature, sample_len=sample_len)
        # Row 0 passes as decoded; row 1 is made to look like a loop (it would be retried in a first pass).
        if temperature == 0.0:
            results[1] = dataclasses.replace(results[1], compression_ratio=3.0)
        return results

    monkeypatch.setattr(batched, "_run_task", run_task)
    segments = batched._decode_windows(audio, [(0.0, 5.5), (5.0, 11.0)], word_timestamps=False, fallback=False)
    assert calls == [(0.0, 64)]  # the longest window is 6 s: 8 tokens/s + 16
    assert segments and all(s.end <= 5.6 for s in segments)  # only the first window's text
    calls.clear()
    batched._decode_windows(audio, [(0.0, 5.5), (5.0, 11.0)], word_timestamps=False)
    assert len(calls) >= 2 and calls[1][0] != 0.0  # a first pass retries the loop at higher temperature


def _turns(lengths: list[float], pause: float = 0.6) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Noise bursts (speech-loud) of `lengths` seconds with quiet pauses between; returns audio and the pauses."""
    rng = np.random.default_rng(7)
    parts, pauses, t = [], [], 0.0
    for i, seconds in enumerate(lengths):
        if i:
            parts.append(rng.standard_normal(int(pause * 16000)) * 0.001)
            pauses.append((t, t + pause))
            t += pause
        parts.append(rng.standard_normal(int(seconds * 16000)) * 0.3)
        t += seconds
    return np.concatenate(parts).astype(np.float32), pauses


def test_split_at_pauses_cuts_a_long_span_only_in_its_pauses() -> None:
    from app.asr.chunking import REDO_SECONDS, split_at_pauses

    audio, pauses = _turns([7.0, 7.4, 8.4])  # 24 s: one long answer with two breaths
    span = (0.0, audio.size / 16000)
    pieces = split_at_pauses(audio, span)
    assert len(pieces) >= 2 and all(end - start <= REDO_SECONDS for start, end in pieces)
    assert pieces[0][0] <= 0.2 and pieces[-1][1] >= span[1] - 0.2  # all the speech is still covered
    for (_, end), (start, _) in itertools.pairwise(pieces):  # every cut lies in a pause
        assert any(lo - 0.25 <= end <= hi + 0.25 and lo - 0.25 <= start <= hi + 0.25 for lo, hi in pauses)
    # Offsets are the span's: the same audio later in a recording gives the same pieces, shifted.
    shifted = split_at_pauses(np.concatenate([np.zeros(16000 * 10, np.float32), audio]), (10.0, 10.0 + span[1]))
    assert [(round(a - 10, 2), round(b - 10, 2)) for a, b in shifted] == [(round(a, 2), round(b, 2)) for a, b in pieces]
    assert split_at_pauses(audio, (3.0, 14.0)) == [(3.0, 14.0)]  # short enough: decoded whole


def test_second_pass_decodes_a_long_sparse_span_in_pieces() -> None:
    from app.asr.chunking import second_pass

    audio, _ = _turns([7.0, 7.4, 8.4])
    first = [_Seg(0.0, 24.4, "I'm always wondered.")]  # 24 s of answer said as three words
    asked: list[list[tuple[float, float]]] = []

    def redo(spans: list[tuple[float, float]]) -> list[_Seg]:
        asked.append(spans)
        return [_Seg(s, e, "the answer in full " * 5) for s, e in spans]

    out = second_pass([(0.0, 24.4)], first, redo, audio=audio)
    assert len(asked) == 1 and len(asked[0]) >= 2  # one decoding call, several pieces
    assert [(s.start, s.end) for s in out] == asked[0] and "wondered" not in " ".join(s.text for s in out)
    asked.clear()
    second_pass([(0.0, 24.4)], first, redo)  # without the audio: the span as it is
    assert asked == [[(0.0, 24.4)]]


def test_numpy_blas_runs_on_one_thread_while_transcribing_and_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    engine = FasterWhisperEngine("tiny.en", cpu_threads=2)
    seen: list[list[int]] = []
    monkeypatch.setattr(engine, "_transcribe", lambda audio, **kw: seen.append(blas_threads()) or [])
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        before = blas_threads()
        assert engine.transcribe(np.zeros(16000, np.float32)) == []
        assert blas_threads() == before
    assert before and seen == [[1] * len(before)]
