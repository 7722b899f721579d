"""Which Whisper encoder feeds the decoder on a CPU, and the swap that puts it there.

The encoder is most of CPU transcription time once the decoder is native (app.asr.native), and the fastest one
depends on the CPU's matrix units, so `auto` picks by what the CPU has (all take fewer than 3,000 frames: a short
window is cut after its speech plus a margin, app.asr.encoder_input):

- **AVX-512 VNNI (AMD Zen 4/5, Intel Ice Lake and later)**: the native int8 encoder (app.asr.native.encoder):
  every product int8, attention's two included, on vpdpbusd, and on AMX tiles where the CPU has them (Sapphire
  Rapids and later). On an Emerald Rapids with AMX the bench ran as fast as with torch bf16 (1.28x faster in one
  of three runs, equal in two; 1.4-1.5x faster than with ONNX Runtime's int8, 2026-12-06); on a Zen 4 it took 0.65x
  ONNX Runtime's time at 1 thread, 0.85x at 2 (2026-12-04, its first version). Closer to float32 than ONNX's int8
  (0.997-0.999 cosine vs 0.994-0.999), and the lowest WER of the three (dev episodes 12.14 % vs 12.86 % ONNX,
  12.46 % bf16; the bench's clips 7.22 % vs 8.33 % and 8.89 %).
- **where the native library can't be built** (no g++): on AMX CPUs openai-whisper's own encoder in torch under
  bfloat16 autocast (oneDNN on AMX; 0.9999 cosine-similar to float32), elsewhere the int8 ONNX Runtime export
  (app.asr.onnx_encoder), with a warning. Without AMX, bf16 has no kernel that beats VNNI int8 (on a Zen 4 with
  AVX512-BF16 the bf16 encoder made the bench 0.94-0.95x as fast as the ONNX one).
- **AVX2 with FMA and F16C (AMD Zen 2/3, Intel Haswell to Alder Lake)**: the native encoder on its AVX2 kernels
  (vpmaddubsw: the linear layers' 8-bit weights kept where no pair of products can saturate, attention's keys and
  values 7-bit). On a Zen 3 (2026-12-06) the bench ran as fast as with ONNX Runtime's int8 (7.17 vs 7.11 s, 6.35 vs
  6.37 s) on 12 % less CPU time, with fewer word errors (dev episodes 12.01 % vs 12.77 %; clips 7.22 % vs 8.89 %),
  before the linear layers moved off the slower int16 kernel (1.2-1.3x faster again, AVX2 build on a Zen 4).
- **anything else** (ARM, older x86): the ONNX export.

CTranslate2's `Whisper.generate` accepts encoder output in place of log-mel features, so only the encoder
changes hands: decoding, timestamps, beam search and the batched pipeline stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.asr import encoder_input

log = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray], np.ndarray]
CHOICES = ("auto", "onnx", "native", "torch-bf16", "ctranslate2")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere: macOS, Windows)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "model", ...; empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                break  # the first processor's block ends at its blank line
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def auto_choice(flags: set[str]) -> str:
    """The encoder `auto` means on a CPU with these flags."""
    if {"avx512_vnni", "avx512bw"} <= flags or {"avx2", "fma", "f16c"} <= flags:
        return "native"
    return fallback_choice(flags)


def fallback_choice(flags: set[str]) -> str:
    """What `auto` takes where the native encoder can't run."""
    return "torch-bf16" if "amx_bf16" in flags else "onnx"


class TorchBf16Encoder:
    """(batch, n_mels, frames <= 3000) log-mel -> (batch, frames / 2, d_model) float32: openai-whisper's encoder,
    bf16 autocast.

    Safe to call from several decoding workers at once (inference only, no state). Threads: torch's own pool
    (all cores), which measured faster on 2 cores than one encoder at a time (a lock): the other worker is
    meanwhile in its single-threaded decode.
    """

    # Takes fewer than 3000 frames: a window's speech + 5 s (app.asr.encoder_input, quality measured there).
    trim_margin = encoder_input.MARGIN_FRAMES

    def __init__(self, checkpoint: Path) -> None:
        import whisper

        model = whisper.load_model(str(checkpoint), device="cpu")
        # Float32 master weights (the checkpoint is fp16): autocast casts them for the matrix products and keeps
        # layer norms and the residual stream in float32.
        self.encoder = model.encoder.float().eval()
        self.n_mels = int(model.dims.n_mels)
        del model

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            # One row at a time: oneDNN builds kernels per input shape (~0.1 s each time it meets a new one), and
            # rows x lengths would be many shapes; a 30 s window alone fills the matrix units anyway (a batch of
            # 4 measured no faster than its rows one by one).
            rows = [encoder_input.encode_any_length(self.encoder, x[i : i + 1]) for i in range(x.shape[0])]
        return np.ascontiguousarray(torch.cat(rows).float().numpy())


def load(choice: str, checkpoint: Path, cache_dir: Path, *, threads: int) -> tuple[Encoder, str]:
    """(encoder, its name as engines report it) for `choice` in CHOICES other than ctranslate2."""
    if choice != "auto":
        return _load(choice, checkpoint, cache_dir, threads=threads)
    flags = cpu_flags()
    choice = auto_choice(flags)
    if choice == "native":
        from app.asr.native.library import Unavailable

        try:
            return _load(choice, checkpoint, cache_dir, threads=threads)
        except Unavailable as exc:
            choice = fallback_choice(flags)
            log.warning("native Whisper encoder unavailable (%s); using %s", exc, choice)
    return _load(choice, checkpoint, cache_dir, threads=threads)


def _load(choice: str, checkpoint: Path, cache_dir: Path, *, threads: int) -> tuple[Encoder, str]:
    if choice == "torch-bf16":
        return TorchBf16Encoder(checkpoint), "torch-bf16"
    if choice == "onnx":
        from app.asr import onnx_encoder

        return onnx_encoder.OnnxEncoder(onnx_encoder.export(checkpoint, cache_dir), threads=threads), "onnx-int8"
    if choice == "native":
        from app.asr.native.encoder import NativeEncoder

        return NativeEncoder(checkpoint, cache_dir, threads=threads), "native-int8"
    raise ValueError(f"unknown CPU encoder {choice!r} (choose from {', '.join(CHOICES)})")


class EncoderSwap:
    """Stands in for a `ctranslate2.models.Whisper`: `encode` runs our encoder, the rest is CTranslate2's.

    With `trim`, an encoder that takes any length (one with a `trim_margin`, in frames) sees only a window's
    speech plus that margin of silence (app.asr.encoder_input), and CTranslate2's decoder attends over that many
    frames.
    """

    def __init__(self, model: Any, encoder: Encoder, *, trim: bool = True) -> None:
        self._model = model
        self._encoder = encoder
        margin: int | None = getattr(encoder, "trim_margin", None)
        self.trim_margin = margin if trim else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        import ctranslate2

        mel = np.asarray(features, dtype=np.float32)  # a CPU StorageView exposes the array interface
        if self.trim_margin is not None:
            mel = mel[:, :, : encoder_input.frames_to_encode(mel, self.trim_margin)]
        return ctranslate2.StorageView.from_array(self._encoder(mel))

    def warm_up(self) -> None:
        """Run the encoder once at every input length it will meet, so no transcription pays for the first."""
        n_mels = int(getattr(self._encoder, "n_mels", 80))
        lengths = encoder_input.lengths() if self.trim_margin is not None else [encoder_input.FULL_FRAMES]
        for frames in lengths:
            self._encoder(np.zeros((1, n_mels, frames), dtype=np.float32))
