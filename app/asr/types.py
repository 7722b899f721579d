"""What every engine returns: ordered segments with start/end seconds, text, and words where the engine gives them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    # Decoder confidence signals, used by the hygiene filters; None where an engine does not report them.
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    speaker: str | None = None


@dataclass
class Transcript:
    segments: list[Segment]
    duration: float
    engine: str  # e.g. "faster-whisper"
    model: str  # e.g. "tiny.en"
    language: str = "en"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def source(self) -> str:
        """Episode.transcript_source value, e.g. "whisper:faster-whisper:tiny.en" (fits String(50))."""
        return f"whisper:{self.engine}:{self.model}"[:50]
