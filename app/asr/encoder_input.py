"""How many log-mel frames of a window the encoder sees: its speech plus a margin of silence, not always 30 s.

Whisper pads every window to 30 s (3,000 frames), so a 5 s clip, the last window of an episode or a short span
decoded again costs a whole 30 s encoder pass, and its decoder attends over 1,500 encoder frames at every token:
half of CTranslate2's decoding time on these CPUs goes to that cross-attention (perf: `xsgemv` in
`dot_product_attention`, docs/benchmarks.md). whisper.cpp's `audio_ctx` cuts the encoder input; the catch is
that the model was trained on 30 s, and with too little silence after the speech it goes wrong (1 s of margin:
69 % WER on the bench clips). With the bf16 encoder and 5 s it did not: on segment-long clips (3-24 s) WER
13.50 % vs 13.93 % on full windows over 155 from the dev episodes, 10.03 % vs 9.60 % over 135 from the
independent set, 7.14 % vs 8.24 % on the 8 real speech clips; 3-11 s clips transcribe 1.3-1.9x faster. The
int8 ONNX encoder needed 8 s to stay as close (onnx_encoder.py). Podcast windows hold up to 25 s of speech and
are mostly not cut at all: the 16 eval episodes gave the same WER either way (docs/benchmarks.md).

So a window is cut after its last non-silent frame plus MARGIN_FRAMES, rounded up to BUCKET_FRAMES (never below
MIN_FRAMES): a handful of input lengths, each warmed up once (oneDNN builds its kernels per shape, ~0.1 s the
first time). Windows of a batch share one length (the longest row's), as CTranslate2 takes one tensor.

Silence here is what the engines' padding produces: audio padded with zeros before the STFT (as transcribe()
does) gives frames whose every mel bin sits at the spectrogram's floor (its maximum - 8, the clamp in Whisper's
log-mel). Mel padded with zeros instead (faster-whisper's sequential loop) has no such tail and is never cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MARGIN_FRAMES = 500  # 5 s of silence kept after the speech (the bf16 encoder; the int8 one keeps 8 s)
BUCKET_FRAMES = 500
MIN_FRAMES = 1000
FULL_FRAMES = 3000  # 30 s: what Whisper was trained on
_FLOOR_EPSILON = 1e-3


def speech_end(mel: np.ndarray) -> np.ndarray:
    """Per row of a (batch, n_mels, frames) log-mel: the index after its last frame above the floor (0: none)."""
    floor = mel.min(axis=(1, 2), keepdims=True)
    active = (mel > floor + _FLOOR_EPSILON).any(axis=1)  # (batch, frames)
    frames = active.shape[1]
    last_from_end = np.argmax(active[:, ::-1], axis=1)
    return np.where(active.any(axis=1), frames - last_from_end, 0)


def frames_to_encode(mel: np.ndarray, margin: int = MARGIN_FRAMES) -> int:
    """How many leading frames of this batch the encoder needs (even: Whisper's second conv has stride 2)."""
    full = mel.shape[-1]
    if mel.shape[0] == 0:
        return full
    needed = int(speech_end(mel).max()) + margin
    bucketed = max(MIN_FRAMES, -(-needed // BUCKET_FRAMES) * BUCKET_FRAMES)
    return min(full, bucketed)


def lengths(full: int = FULL_FRAMES) -> list[int]:
    """Every input length frames_to_encode can return for windows of `full` frames (what warm-up runs)."""
    shorter = range(MIN_FRAMES, full, BUCKET_FRAMES)
    return [*shorter, full]


def encode_any_length(encoder: Any, mel: Any) -> Any:
    """openai-whisper's AudioEncoder.forward on any even number of frames <= 3000 (its own forward insists on
    3000): the positional embedding is cut to the frames there are, as whisper.cpp does with audio_ctx."""
    import torch.nn.functional as F

    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x))
    x = x.permute(0, 2, 1)
    x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
    for block in encoder.blocks:
        x = block(x)
    return encoder.ln_post(x)
