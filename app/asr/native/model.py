"""A Whisper checkpoint's text decoder loaded into the native library: int8 weights packed once.

Weights come from the same openai-whisper checkpoint as the CPU encoder (app.asr.weights), quantized per output
row (symmetric int8, like CTranslate2's int8); layer norms, embeddings and biases stay float32.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.native import library

# Indices of the linear layers in decoder.cpp's set_linear.
QKV, SELF_OUT, CROSS_Q, CROSS_OUT, MLP_UP, MLP_DOWN, PROJECTION, CROSS_K, CROSS_V = range(9)


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per output row): w ~= q * scale[:, None]."""
    scale = (np.abs(w).max(axis=1) / 127 + 1e-12).astype(np.float32)
    return np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), scale


class NativeModel:
    """The decoder of `checkpoint` in the library; the arrays it points into live as long as this object."""

    def __init__(self, checkpoint: Path, cache_dir: Path, extra: Sequence[str] = ()) -> None:
        """`extra`: compiler options for the library (library.load)."""
        import whisper

        self.lib = library.load(cache_dir, extra=extra)
        self.kernels = str(self.lib.kernels().decode())  # "avx512-vnni" or "avx2"
        dec = whisper.load_model(str(checkpoint), device="cpu").float().eval().decoder
        emb = f32(dec.token_embedding.weight)
        self.vocab, self.width = emb.shape
        self.heads, self.layers = int(dec.blocks[0].attn.n_head), len(dec.blocks)
        self.ctx = int(dec.positional_embedding.shape[0])
        if self.width % self.heads or self.width // self.heads != 64:
            raise library.Unavailable(f"head width {self.width // self.heads} (the kernels are written for 64)")
        self._keep: list[np.ndarray] = []  # the library holds pointers into these
        pos, ln_g, ln_b = f32(dec.positional_embedding), f32(dec.ln.weight), f32(dec.ln.bias)
        self._keep += [emb, pos, ln_g, ln_b]
        self.handle = self.lib.create_model(
            self.width, self.heads, self.vocab, self.layers, self.ctx, ptr(emb), ptr(pos), ptr(ln_g), ptr(ln_b)
        )
        for i, b in enumerate(dec.blocks):
            a, x = b.attn, b.cross_attn
            self._linear(i, QKV, *fused_qkv(a))
            self._linear(i, SELF_OUT, f32(a.out.weight), f32(a.out.bias))
            self._linear(i, CROSS_Q, f32(x.query.weight), f32(x.query.bias))
            self._linear(i, CROSS_OUT, f32(x.out.weight), f32(x.out.bias))
            self._linear(i, MLP_UP, f32(b.mlp[0].weight), f32(b.mlp[0].bias))
            self._linear(i, MLP_DOWN, f32(b.mlp[2].weight), f32(b.mlp[2].bias))
            self._linear(i, CROSS_K, f32(x.key.weight), None)
            self._linear(i, CROSS_V, f32(x.value.weight), f32(x.value.bias))
            norms = [f32(t) for ln in (b.attn_ln, b.cross_attn_ln, b.mlp_ln) for t in (ln.weight, ln.bias)]
            self._keep += norms
            self.lib.set_layer_norms(self.handle, i, *map(ptr, norms))
        self._linear(0, PROJECTION, emb, None)  # the vocabulary projection is the token embedding (tied)
        self.slot_floats = int(self.lib.self_slot_floats(self.handle))

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self.lib.free_model(handle)

    def _linear(self, layer: int, which: int, w: np.ndarray, bias: np.ndarray | None) -> None:
        arrays, args = packed_linear(self.lib, w, bias)
        self._keep += arrays
        self.lib.set_linear(self.handle, layer, which, *args)

    # Buffers, and thin wrappers over the library's calls (shapes documented in decoder.cpp).

    def caches(self, features: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
        """(self-attention cache with `slots` row slots, cross cache with window i's audio keys/values in slot i)
        for encoder output `features` (windows, frames, width)."""
        windows, frames = features.shape[0], features.shape[1]
        # np.empty: a step reads only positions already written, and untouched pages cost nothing.
        cache = np.empty((slots, self.slot_floats), np.float32)
        cross = np.empty((windows, int(self.lib.cross_slot_size(self.handle, frames))), np.uint16)
        for i in range(windows):
            f = np.ascontiguousarray(features[i], dtype=np.float32)
            self.lib.cross_kv(self.handle, ptr(f), frames, cross[i].ctypes.data_as(ctypes.c_void_p))
        return cache, cross

    def copy_slot(self, cache: np.ndarray, dst: int, src: int, length: int) -> None:
        self.lib.copy_slot(self.handle, ptr(cache), dst, src, length)

    def step(
        self,
        tokens: np.ndarray,
        windows: int,
        row_slot: np.ndarray,
        window_slot: np.ndarray,
        frames: int,
        pos: int,
        cache: np.ndarray,
        cross: np.ndarray,
    ) -> np.ndarray:
        """Logits (rows, vocab) for `tokens` (one per row, int32) at position `pos`."""
        logits = np.empty((len(tokens), self.vocab), np.float32)
        self.lib.step(
            self.handle, ptr(tokens), len(tokens), windows, ptr(row_slot), ptr(window_slot), frames, pos,
            ptr(cache), ptr(cross), ptr(logits),
        )  # fmt: skip
        return logits


def packed_linear(lib: Any, w: np.ndarray, bias: np.ndarray | None) -> tuple[list[np.ndarray], tuple[Any, ...]]:
    """float32 weights (n, k) quantized per output row and packed by the library: (arrays the library will point
    into, which the caller keeps alive; the (weights, comp, scale, bias, k, n) arguments of set_linear)."""
    n, k = w.shape
    q, scale = quantize_rows(w)
    packed, comp = np.zeros((n + 15) // 16 * 16 * k, np.int8), np.zeros(n, np.int32)
    lib.pack(ptr(q), n, k, ptr(packed), ptr(comp))
    arrays = [packed, comp, scale] + ([] if bias is None else [bias])
    return arrays, (ptr(packed), ptr(comp), ptr(scale), None if bias is None else ptr(bias), k, n)


def fused_qkv(attn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) float32 of a block's self-attention query|key|value as one product (Whisper's key projection
    has no bias: zeros in its place)."""
    weight = [f32(attn.query.weight), f32(attn.key.weight), f32(attn.value.weight)]
    bias = [f32(attn.query.bias), np.zeros(attn.key.weight.shape[0], np.float32), f32(attn.value.bias)]
    return np.concatenate(weight), np.concatenate(bias)


def f32(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)
