"""faster-whisper (CTranslate2): the CPU engine, and the GPU engine on CUDA 12 machines.

Batched (BatchedInferencePipeline over <= 30 s windows cut at pauses by app.asr.chunking, decoded batch_size
at a time) is 2-3x faster than the sequential loop on 2 cores (docs/benchmarks.md), and decoding only speech
windows keeps text off silence. Beam 2 by default: greedy int8 lost 1-3 WER points against openai-whisper's
greedy transcribe() on the same weights, beam 2 is at or below it for ~0-11% more CPU. No conditioning on the
previous window, so one bad window can't derail the rest of a long episode.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from app.asr import chunking
from app.asr.audio import SAMPLE_RATE
from app.asr.engines.base import Progress
from app.asr.types import Segment, Word
from app.asr.weights import ct2_model


def default_cpu_threads() -> int:
    # CTranslate2 scales to physical cores; more threads than cores only adds contention.
    return max(1, os.cpu_count() or 1)


class _SilencePadded:
    """faster-whisper's batched pipeline pads each window's log-mel to 30 s with zeros, and a zero log-mel is
    not silence but a moderate hum: Whisper then treats the last sentence as running on past the window and
    leaves it out (whole sentences went missing on a 266 s episode). Padding the audio with silence before
    the STFT, as openai-whisper's transcribe() does, gives the model the real end of speech."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> Any:
        n_samples = int(self.inner.n_samples)
        if chunk_length is None and waveform.shape[-1] < n_samples:
            padding += n_samples - waveform.shape[-1]
        return self.inner(waveform, padding=padding, chunk_length=chunk_length)


class FasterWhisperEngine:
    name = "faster-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        batch_size: int = 8,
        cpu_threads: int | None = None,
        vad: str = "energy",
        beam_size: int = 2,
    ) -> None:
        if vad not in ("energy", "silero", "none"):
            raise ValueError(f"unknown vad {vad!r}")
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.cpu_threads = cpu_threads or default_cpu_threads()
        self.vad = vad
        self.beam_size = beam_size
        if batch_size <= 1:
            self.name = "faster-whisper-sequential"
        self._model: Any = None
        self._pipeline: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from faster_whisper import BatchedInferencePipeline, WhisperModel

            self._model = WhisperModel(
                ct2_model(self.model_name),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=1,
            )
            if self.batch_size > 1:
                self._model.feature_extractor = _SilencePadded(self._model.feature_extractor)
            self._pipeline = BatchedInferencePipeline(self._model)

    def warm_up(self) -> None:
        self._load()
        # Real-ish input (noise) rather than zeros: VAD must find "speech" so the decoder runs too.
        rng = np.random.default_rng(0)
        self.transcribe((rng.standard_normal(SAMPLE_RATE * 3) * 0.1).astype(np.float32))

    def transcribe(
        self, audio: np.ndarray, *, word_timestamps: bool = False, progress: Progress | None = None
    ) -> list[Segment]:
        self._load()
        common: dict[str, Any] = dict(
            language="en" if self.model_name.endswith(".en") else None,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            word_timestamps=word_timestamps,
            without_timestamps=False,
            compression_ratio_threshold=2.4,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
        )
        if audio.size == 0:
            return []
        if self.batch_size > 1:
            if self.vad == "silero":
                segments, _info = self._pipeline.transcribe(audio, batch_size=self.batch_size, **common)
            else:
                windows = (
                    chunking.pack_windows(chunking.energy_regions(audio))
                    if self.vad == "energy"
                    else chunking.fixed_windows(audio.size / SAMPLE_RATE)
                )
                if not windows:
                    return []  # nothing above the noise floor: no text over silence
                clips = [{"start": s, "end": e} for s, e in windows]
                segments, _info = self._pipeline.transcribe(
                    audio, batch_size=self.batch_size, clip_timestamps=clips, **common
                )
        else:
            segments, _info = self._model.transcribe(audio, vad_filter=self.vad == "silero", **common)
        out: list[Segment] = []
        for seg in segments:
            words = tuple(
                Word(start=float(w.start), end=float(w.end), word=w.word, probability=float(w.probability))
                for w in (seg.words or ())
            )
            out.append(
                Segment(
                    start=float(seg.start),
                    end=float(seg.end),
                    text=seg.text.strip(),
                    words=words,
                    avg_logprob=float(seg.avg_logprob),
                    compression_ratio=float(seg.compression_ratio),
                    no_speech_prob=float(seg.no_speech_prob),
                )
            )
            if progress is not None:
                progress(float(seg.end))
        return out
