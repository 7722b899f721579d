"""The interface every engine implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from app.asr.types import Segment

# Called with the number of audio seconds done so far (drives the CLI's progress bar).
Progress = Callable[[float], None]


class Engine(Protocol):
    name: str  # "faster-whisper", "openai-whisper", "openai-whisper-batched" ...
    model_name: str
    device: str

    def warm_up(self) -> None:
        """Load weights and run once on a little audio, so timing excludes first-call costs."""

    def transcribe(
        self, audio: np.ndarray, *, word_timestamps: bool = False, progress: Progress | None = None
    ) -> list[Segment]:
        """Segments in time order for 16 kHz mono float32 audio; hygiene filters are applied by the caller."""
        ...
