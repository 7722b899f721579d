"""Speech to text: Whisper engines (faster-whisper on CPU, openai-whisper torch on GPU), audio loading,
CTranslate2 -> openai-whisper conversion, long-audio hygiene, WER, publisher transcript parsers.

Entry point for the pipeline: transcribe_file(path) -> Transcript.

Imports stay light (no settings, no torch at import time) so the benchmark can run on a bare GPU machine that
has torch and openai-whisper but none of the service's dependencies (scripts/gpu_bench.sh).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.asr.types import Segment, Transcript, Word

if TYPE_CHECKING:
    from app.asr.engines.base import Engine, Progress

__all__ = ["Segment", "Transcript", "Word", "transcribe_audio", "transcribe_file"]


def transcribe_audio(
    audio: object,
    *,
    engine: Engine | None = None,
    word_timestamps: bool = False,
    progress: Progress | None = None,
) -> Transcript:
    import numpy as np

    from app.asr.audio import SAMPLE_RATE
    from app.asr.hygiene import clean_segments
    from app.asr.select import get_engine

    samples = np.asarray(audio, dtype=np.float32)
    eng = engine or get_engine()
    segments = eng.transcribe(samples, word_timestamps=word_timestamps, progress=progress)
    return Transcript(
        segments=clean_segments(segments),
        duration=samples.size / SAMPLE_RATE,
        engine=eng.name,
        model=eng.model_name,
    )


def transcribe_file(
    path: str | Path,
    *,
    engine: Engine | None = None,
    word_timestamps: bool = False,
    progress: Progress | None = None,
    max_seconds: float | None = None,
) -> Transcript:
    """Decode (refusing audio over settings.asr_max_audio_seconds with PermanentError), transcribe, clean."""
    from app.asr.audio import load_audio
    from app.config import get_settings

    cap = max_seconds if max_seconds is not None else get_settings().asr_max_audio_seconds
    audio = load_audio(path, max_seconds=cap)
    return transcribe_audio(audio, engine=engine, word_timestamps=word_timestamps, progress=progress)
