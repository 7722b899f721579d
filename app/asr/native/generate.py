"""CTranslate2's `Whisper.generate`, as faster-whisper's batched pipeline calls it, on the native decoder.

Same contract (prompts in, `sequences_ids` / `scores` / `no_speech_prob` out) and the same rules, so the
pipeline's chunking, second pass, hygiene filters and word alignment (still CTranslate2's) don't change:
- beam search as CTranslate2's: a window's 2 x beam_size likeliest continuations are ranked, the first
  beam_size go on, one of them ending in end-of-text is collected as finished and replaced by the next
  candidate, until round(beam_size * patience) are collected (or max_length: then the beams count too);
- the logit filters of openai-whisper / CTranslate2: suppressed tokens, suppress_blank at the first sampled
  token, the timestamp rules (pairs, never decreasing, the first one within max_initial_timestamp_index, and a
  timestamp whenever all timestamps together beat any text token);
- score = cumulative log-probability / length ** length_penalty (length without end-of-text), which is what
  faster-whisper turns back into avg_logprob; no_speech_prob = P(<|nocaptions|>) after <|startoftranscript|>.
Calls outside that (sampling, repetition penalties, several hypotheses) go to CTranslate2 (DecoderSwap).

Work per step: the library computes all rows' logits and picks each row's candidates (decoder.cpp `choose`);
Python only ranks (beams x 2 beams) candidates a window. Beams live in fixed cache slots: a beam that
continues keeps its slot, and only a beam that forks copies its history into a slot left free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.asr.cores import CoreShare
from app.asr.native.model import NativeModel, ptr

# Keyword arguments of ctranslate2.models.Whisper.generate, and the values under which it decodes like we do.
_SAME_AS_DEFAULT = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "sampling_topk": 1,
    "num_hypotheses": 1,
    "return_logits_vocab": False,
}
_HANDLED = {
    "beam_size", "patience", "length_penalty", "max_length", "suppress_blank", "suppress_tokens", "return_scores",
    "return_no_speech_prob", "sampling_temperature", "max_initial_timestamp_index", "max_batch_size",
}  # fmt: skip


@dataclass
class GenerationResult:
    """What faster-whisper reads from ctranslate2.models.WhisperGenerationResult."""

    sequences_ids: list[list[int]]
    scores: list[float]
    no_speech_prob: float = 0.0
    sequences: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Tokens:
    """The special token ids the rules use (from openai-whisper's tokenizer for the checkpoint's vocabulary)."""

    eot: int
    sot: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int
    blank: tuple[int, ...]  # " " and end-of-text: not the first sampled token (suppress_blank)
    default_suppressed: tuple[int, ...]  # what suppress_tokens=[-1] means

    @classmethod
    def for_vocabulary(cls, n_vocab: int) -> Tokens:
        from whisper.tokenizer import get_tokenizer

        multilingual = n_vocab >= 51865
        tok = get_tokenizer(multilingual, num_languages=n_vocab - 51765 - int(multilingual))
        return cls(
            eot=tok.eot, sot=tok.sot, no_timestamps=tok.no_timestamps, timestamp_begin=tok.timestamp_begin,
            no_speech=tok.no_speech, blank=(*tok.encode(" "), tok.eot),
            # CTranslate2's converter writes these as the model's "suppress_ids": symbols and speaker marks, and
            # the task tokens openai-whisper's DecodingTask suppresses (they also take no probability mass).
            default_suppressed=(
                *tok.non_speech_tokens, tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev,
                tok.no_speech,
            ),
        )  # fmt: skip


@dataclass
class _Beam:
    tokens: list[int]  # sampled so far (no prompt, no end-of-text)
    logprob: float
    slot: int
    last_timestamp: int = -1  # id of the last timestamp token sampled, -1 if none


@dataclass
class _Window:
    index: int
    beams: list[_Beam]
    slots: list[int]
    finished: list[tuple[list[int], float]] = field(default_factory=list)


def unsupported(kwargs: dict[str, Any], prompts: Sequence[Sequence[int]]) -> str | None:
    """Why this generate() call must go to CTranslate2, or None when the native decoder does what it asks."""
    for name, value in kwargs.items():
        if name in _SAME_AS_DEFAULT:
            if value != _SAME_AS_DEFAULT[name]:
                return f"{name}={value!r}"
        elif name not in _HANDLED:
            return f"argument {name}"
    if not prompts or len({len(p) for p in prompts}) != 1:
        return "prompts of different lengths"
    return None


class NativeGenerator:
    def __init__(self, model: NativeModel) -> None:
        self.model = model
        self.tokens = Tokens.for_vocabulary(model.vocab)
        # Threads for each step, asked again at every step (app.asr.cores): the CPU engine hands its own share,
        # so a decoding worker alone on the CPU (a short file, or the last of a long file's runs) splits its steps
        # among the cores the others left idle. Default: one thread, as for workers side by side that take a core
        # each.
        self.cores = CoreShare(1)

    def generate(
        self,
        features: np.ndarray,
        prompts: Sequence[Sequence[int]],
        *,
        beam_size: int = 5,
        patience: float = 1.0,
        length_penalty: float = 1.0,
        max_length: int = 448,
        suppress_blank: bool = True,
        suppress_tokens: Sequence[int] | None = (-1,),
        return_scores: bool = False,
        return_no_speech_prob: bool = False,
        max_initial_timestamp_index: int = 50,
        **_ignored: Any,  # sampling_temperature (greedy/beam whatever it is, as sampling_topk=1), max_batch_size
    ) -> list[GenerationResult]:
        m, t = self.model, self.tokens
        features = np.ascontiguousarray(features, dtype=np.float32)
        n_windows, frames = features.shape[0], features.shape[1]
        beams = max(1, int(beam_size))
        prompt = np.asarray(prompts, dtype=np.int32)
        start = prompt.shape[1]
        # CTranslate2 decodes at most max_length // 2 tokens after the prompt (its Whisper::generate).
        max_new = min(int(max_length) // 2, int(max_length) - start, m.ctx - start)
        timestamps = t.no_timestamps not in prompt[0]
        suppress = self._suppressed(suppress_tokens)
        blank = np.asarray(t.blank if suppress_blank else (), np.int32)
        max_candidates = max(1, int(beams * patience + 0.5))  # C++ std::round, as CTranslate2
        with self.cores.working():  # the whole call: one worker, one share of the cores
            cache, cross = m.caches(features, n_windows * beams, self.cores.threads())
            scratch = m.logits_buffer(n_windows * beams)  # every step's logits, each read before the next step
            try:
                windows = [
                    _Window(i, [_Beam([], 0.0, i * beams)], list(range(i * beams, (i + 1) * beams)))
                    for i in range(n_windows)
                ]
                threads = self.cores.threads()
                logits, no_speech = self._prefill(prompt, frames, cache, cross, beams, threads, scratch)
                active, pos = windows, start - 1
                while active and max_new > 0:
                    rows = [b for win in active for b in win.beams]
                    ids, logprobs = self._choose(
                        logits, rows, suppress, blank, timestamps, max_initial_timestamp_index, 2 * beams, threads
                    )
                    r, still = 0, []
                    for win in active:
                        n = len(win.beams)
                        done = self._advance(
                            win, ids[r : r + n], logprobs[r : r + n], beams, max_candidates, cache, pos + 1
                        )
                        r += n
                        if not done and len(win.beams[0].tokens) < max_new:
                            still.append(win)
                        elif not done:  # cut at max_length: CTranslate2 counts the beams as hypotheses too
                            win.finished += [(b.tokens, b.logprob) for b in win.beams]
                    active = still
                    if not active:
                        break
                    pos += 1
                    tokens = np.asarray([b.tokens[-1] for win in active for b in win.beams], np.int32)
                    row_slot = np.asarray([b.slot for win in active for b in win.beams], np.int32)
                    window_slot = np.asarray([win.index for win in active], np.int32)
                    threads = self.cores.threads()  # per step: another worker may have finished meanwhile
                    logits = m.step(
                        tokens, len(active), row_slot, window_slot, frames, pos, cache, cross, threads, scratch
                    )
                if not return_no_speech_prob:
                    no_speech = np.zeros(n_windows)
                return [self._result(win, length_penalty, float(no_speech[win.index])) for win in windows]
            finally:
                m.release(cache, cross, scratch)  # for the next call to reuse

    def _prefill(
        self,
        prompt: np.ndarray,
        frames: int,
        cache: np.ndarray,
        cross: np.ndarray,
        beams: int,
        threads: int,
        scratch: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the prompts (windows, length) through, one row a window in its first slot (the beams fork from
        the first sampled token on): (logits after the last prompt token, P(no speech) a window)."""
        t = self.tokens
        n_windows = len(prompt)
        row_slot = np.arange(n_windows, dtype=np.int32) * beams
        window_slot = np.arange(n_windows, dtype=np.int32)
        sot_at = list(prompt[0]).index(t.sot) if t.sot in prompt[0] else -1
        no_speech = np.zeros(n_windows)
        logits = np.empty((0, self.model.vocab), np.float32)
        for pos in range(prompt.shape[1]):
            logits = self.model.step(
                prompt[:, pos].copy(), n_windows, row_slot, window_slot, frames, pos, cache, cross, threads, scratch
            )
            if pos == sot_at:  # Whisper's no-speech probability is read right after <|startoftranscript|>
                z = logits.astype(np.float64)
                z = np.exp(z - z.max(axis=1, keepdims=True))
                no_speech = z[:, t.no_speech] / z.sum(axis=1)
        return logits, no_speech

    def _suppressed(self, suppress_tokens: Sequence[int] | None) -> np.ndarray:
        ids = {int(i) for i in (suppress_tokens or ()) if int(i) >= 0}
        if suppress_tokens and -1 in suppress_tokens:
            ids |= set(self.tokens.default_suppressed)
        ids.add(self.tokens.no_timestamps)  # a timestamp-mode decoder never switches timestamps off
        return np.asarray(sorted(ids), np.int32)

    def _choose(
        self,
        logits: np.ndarray,
        rows: list[_Beam],
        suppress: np.ndarray,
        blank: np.ndarray,
        timestamps: bool,
        max_initial: int,
        k: int,
        threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, log-probabilities), (rows, k) each, best first; id -1 where fewer than k tokens are allowed.
        `threads` share the rows."""
        t, vocab = self.tokens, self.model.vocab
        n = len(rows)
        text_end = np.zeros(n, np.int32)
        ts_lo = np.full(n, vocab, np.int32)
        ts_hi = np.full(n, vocab, np.int32)
        first = np.asarray([not b.tokens for b in rows], np.int32)
        if timestamps:
            for i, b in enumerate(rows):
                text_end[i], ts_lo[i], ts_hi[i] = _timestamp_rule(b, t, vocab, max_initial)
        ids = np.empty((n, k), np.int32)
        logprobs = np.empty((n, k), np.float32)
        self.model.lib.choose(
            ptr(logits), n, vocab, ptr(suppress), len(suppress), ptr(blank), len(blank), ptr(text_end), ptr(ts_lo),
            ptr(ts_hi), ptr(first), t.timestamp_begin, k, ptr(ids), ptr(logprobs), max(1, threads),
        )  # fmt: skip
        return ids, logprobs

    def _advance(
        self,
        w: _Window,
        ids: np.ndarray,
        logprobs: np.ndarray,
        beams: int,
        max_candidates: int,
        cache: np.ndarray,
        length: int,
    ) -> bool:
        """One beam-search update of window `w` (its beams' candidates given); True when it is finished.
        `length`: positions decoded so far (how much history a forked beam copies in `cache`).

        CTranslate2's rule (BeamSearch::search in its decoding.cc), not openai-whisper's: of the window's
        2 x beams best candidates, the first `beams` go on; one of those that ends in end-of-text is a finished
        hypothesis instead, and the next candidate not ending there takes its place. An end-of-text further down
        is not collected. (openai-whisper collects every end-of-text met before `beams` sequences go on, so it
        can stop sooner, on shorter sequences.)"""
        eot = self.tokens.eot
        candidates = sorted(
            (
                (b.logprob + float(lp), b, int(i))
                for b, row_ids, row_lp in zip(w.beams, ids, logprobs, strict=True)
                for i, lp in zip(row_ids, row_lp, strict=True)
                if i >= 0
            ),
            key=lambda c: -c[0],
        )[: 2 * beams]
        going: list[tuple[float, _Beam, int]] = []
        spare = beams  # the next candidate that may stand in for a finished one
        for score, b, tok in candidates[:beams]:
            if tok != eot:
                going.append((score, b, tok))
                continue
            w.finished.append((b.tokens, score))
            while spare < len(candidates) and candidates[spare][2] == eot:
                spare += 1
            if spare < len(candidates):
                going.append(candidates[spare])
                spare += 1
        if len(w.finished) >= max_candidates or not going:
            return True
        while len(going) < beams:  # keeps every window at `beams` rows (the step's layout); rarely needed
            going.append(going[-1])
        # Slots: a beam's first continuation keeps its slot; a second one forks into a free slot.
        taken = {b.slot for _, b, _ in going}
        free = [s for s in w.slots if s not in taken]
        claimed: set[int] = set()
        new: list[_Beam] = []
        for score, b, tok in going:
            slot = b.slot
            if slot in claimed:
                slot = free.pop()
                self.model.copy_slot(cache, slot, b.slot, length)
            claimed.add(slot)
            last_ts = tok if tok >= self.tokens.timestamp_begin else b.last_timestamp
            new.append(_Beam([*b.tokens, tok], score, slot, last_ts))
        w.beams = new
        return False

    def _result(self, w: _Window, length_penalty: float, no_speech: float) -> GenerationResult:
        pool = w.finished or [(b.tokens, b.logprob) for b in w.beams]
        scored = [(lp / max(1, len(toks)) ** length_penalty, toks) for toks, lp in pool]
        score, tokens = max(scored, key=lambda s: s[0])
        return GenerationResult(sequences_ids=[list(tokens)], scores=[float(score)], no_speech_prob=no_speech)


def _timestamp_rule(b: _Beam, t: Tokens, vocab: int, max_initial: int | None) -> tuple[int, int, int]:
    """(text forbidden below this id, first allowed timestamp id, end of allowed timestamp ids) for beam `b`:
    openai-whisper's ApplyTimestampRules as bounds (app.asr.engines.timestamp_rules has it as tensor masks)."""
    ts = t.timestamp_begin
    if not b.tokens:  # the first sampled token is a timestamp, at most max_initial in
        return ts, ts, vocab if max_initial is None else min(vocab, ts + max_initial + 1)
    last = b.tokens[-1] >= ts
    penultimate = len(b.tokens) < 2 or b.tokens[-2] >= ts
    if last and penultimate:  # a pair just closed (or the first timestamp): text next
        return 0, vocab, vocab
    # Timestamps never decrease: after text (a segment open) the closing one is later than the opening one;
    # right after a closing one, the next segment may open at that same time.
    lo = ts if b.last_timestamp < 0 else b.last_timestamp + (0 if last else 1)
    return (t.eot if last else 0), lo, vocab


class DecoderSwap:
    """Stands in for a `ctranslate2.models.Whisper` (or an app.asr.cpu_encoder.EncoderSwap around one): generate()
    runs the native decoder for the calls it implements (`unsupported`), the rest is the wrapped model's."""

    def __init__(self, model: Any, generator: NativeGenerator) -> None:
        self._model = model
        self.generator = generator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, features: Any, prompts: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        if unsupported(kwargs, prompts) is not None:
            return self._model.generate(features, prompts, **kwargs)
        # A CPU StorageView (our encoders' output, or CTranslate2's on CPU) exposes the array interface.
        return self.generator.generate(np.asarray(features, dtype=np.float32), prompts, **kwargs)
