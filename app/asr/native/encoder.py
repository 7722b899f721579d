"""A Whisper checkpoint's audio encoder in the native library (encoder.cpp): int8 weights packed once.

Same contract as the other CPU encoders (app.asr.cpu_encoder): (batch, n_mels, frames <= 3000) log-mel ->
(batch, frames / 2, d_model) float32, any even number of frames (the positional embedding cut to them, as
app.asr.encoder_input.encode_any_length), so the engine feeds it a window's speech plus a margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.asr.cores import CoreShare
from app.asr.native import library
from app.asr.native.model import f32, fused_qkv, packed_linear, pair_bound_for, ptr

# Indices of the linear layers in encoder.cpp's set_encoder_linear.
QKV, SELF_OUT, MLP_UP, MLP_DOWN, CONV1, CONV2 = range(6)


class NativeEncoder:
    """(batch, n_mels, frames) log-mel -> (batch, frames / 2, width) audio features on the native library.

    Threads: a call alone uses `threads`; calls that overlap (one per decoding worker) share them (`cores`, asked
    again per window), so two workers encoding at once run one thread each rather than oversubscribing the cores.
    """

    # The int8 encoders need more silence after the speech than bf16 (app.asr.onnx_encoder.OnnxEncoder.trim_margin).
    # Checked for this one (docs/benchmarks.md, Zen 3 2026-12-07): 5 s of silence read 2.6 points worse on the dev
    # segment clips and 4.4 on the real ones; 11 s and whole 30 s windows were no better than 8 s.
    trim_margin = 800

    def __init__(
        self,
        checkpoint: Path,
        cache_dir: Path,
        *,
        threads: int = 1,
        extra: Sequence[str] = (),
        pair_bound: bool | None = None,
    ) -> None:
        """`extra`: compiler options for the library (library.load); `pair_bound`: as NativeModel's."""
        import whisper

        self.lib = library.load(cache_dir, extra=extra)
        self.kernels = str(self.lib.kernels().decode())
        self.pair_bound = pair_bound_for(self.kernels, pair_bound)
        self.amx = bool(self.lib.set_amx(-1))  # products with k a multiple of 64 on AMX tiles (kernels.h)
        enc = whisper.load_model(str(checkpoint), device="cpu").float().eval().encoder
        self.width = int(enc.conv1.weight.shape[0])
        self.n_mels = int(enc.conv1.weight.shape[1])
        self.heads, self.layers = int(enc.blocks[0].attn.n_head), len(enc.blocks)
        self.ctx = int(enc.positional_embedding.shape[0])
        if self.width % self.heads or self.width // self.heads != 64:
            raise library.Unavailable(f"head width {self.width // self.heads} (the kernels are written for 64)")
        self.threads = max(1, threads)
        # Who shares the cores: by default the calls into this encoder; the CPU engine hands its own, which its
        # decoding workers hold for their whole run (app.asr.cores).
        self.cores = CoreShare(self.threads)
        self._keep: list[np.ndarray] = []  # the library holds pointers into these
        pos, ln_g, ln_b = f32(enc.positional_embedding), f32(enc.ln_post.weight), f32(enc.ln_post.bias)
        self._keep += [pos, ln_g, ln_b]
        self.handle = self.lib.create_encoder(
            self.width, self.heads, self.layers, self.n_mels, self.ctx, ptr(pos), ptr(ln_g), ptr(ln_b)
        )
        # Convolution weights (out, in, 3) flattened to (out, in * 3): the column layout encoder.cpp builds.
        self._linear(0, CONV1, f32(enc.conv1.weight).reshape(self.width, -1), f32(enc.conv1.bias))
        self._linear(0, CONV2, f32(enc.conv2.weight).reshape(self.width, -1), f32(enc.conv2.bias))
        for i, b in enumerate(enc.blocks):
            self._linear(i, QKV, *fused_qkv(b.attn))
            self._linear(i, SELF_OUT, f32(b.attn.out.weight), f32(b.attn.out.bias))
            self._linear(i, MLP_UP, f32(b.mlp[0].weight), f32(b.mlp[0].bias))
            self._linear(i, MLP_DOWN, f32(b.mlp[2].weight), f32(b.mlp[2].bias))
            norms = [f32(t) for ln in (b.attn_ln, b.mlp_ln) for t in (ln.weight, ln.bias)]
            self._keep += norms
            self.lib.set_encoder_norms(self.handle, i, *map(ptr, norms))

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self.lib.free_encoder(handle)

    def _linear(self, layer: int, which: int, w: np.ndarray, bias: np.ndarray | None) -> None:
        arrays, args = packed_linear(self.lib, w, bias, self.pair_bound)
        self._keep += arrays
        self.lib.set_encoder_linear(self.handle, layer, which, *args)

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        batch, n_mels, frames = mel.shape
        if n_mels != self.n_mels or frames % 2 or not 0 < frames <= 2 * self.ctx:
            raise ValueError(
                f"log-mel of shape {mel.shape}: want (batch, {self.n_mels}, even frames <= {2 * self.ctx})"
            )
        out = np.empty((batch, frames // 2, self.width), np.float32)
        with self.cores.working():
            for i in range(batch):
                row = np.ascontiguousarray(mel[i], dtype=np.float32)
                # Asked per window: a call left alone takes the cores another gave back (app.asr.cores).
                self.lib.encode(self.handle, ptr(row), frames, ptr(out[i]), self.cores.threads())
        return out
