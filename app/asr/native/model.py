"""A Whisper checkpoint's text decoder loaded into the native library: int8 weights packed once.

Weights come from the same openai-whisper checkpoint as the CPU encoder (app.asr.weights), quantized per output
row (symmetric int8, like CTranslate2's int8; on AVX2 with the pair bound its kernel needs, quantize_rows); layer
norms, embeddings and biases stay float32.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.native import library

# Indices of the linear layers in decoder.cpp's set_linear.
QKV, SELF_OUT, CROSS_Q, CROSS_OUT, MLP_UP, MLP_DOWN, PROJECTION, CROSS_K, CROSS_V = range(9)


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)


def quantize_rows(w: np.ndarray, pair_bound: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per output row): w ~= q * scale[:, None].

    `pair_bound` (what the AVX2 kernels need, `pair_bound_for`): every row's scale also covers the sums of its
    neighbours w[2p] + w[2p+1], so |q[2p] + q[2p+1]| <= 128 (127 before rounding, + 1 at most after). AVX2's
    vpmaddubsw adds each such pair of uint8 x int8 products into an int16: at most 255 x 128 = 32,640 for a pair
    of one sign, 255 x 127 for a pair of opposite signs, so no sum can saturate. The scale grows 1.1-1.3x on
    Whisper tiny's rows; a product's error 0.0164 against 0.0156 without the bound (7-bit weights: 0.0205).
    """
    bound = np.abs(w).max(axis=1)
    if pair_bound:
        bound = np.maximum(bound, np.abs(w[:, 0::2] + w[:, 1::2]).max(axis=1))
    scale = (bound / 127 + 1e-12).astype(np.float32)
    return np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8), scale


def pair_bound_for(kernels: str, asked: bool | None = None) -> bool:
    """quantize_rows' `pair_bound` for a library with these kernels ("avx2" or "avx512-vnni"): what they need
    unless `asked`. AVX2's vpmaddubsw would saturate on weights without the bound, so those are refused; AVX-512's
    vpdpbusd adds uint8 x int8 products straight into int32 and takes either (full 8-bit by default)."""
    needed = kernels == "avx2"
    if asked is None:
        return needed
    if needed and not asked:
        raise ValueError("the AVX2 kernels need pair-bounded weights (quantize_rows): their sums would saturate")
    return asked


class NativeModel:
    """The decoder of `checkpoint` in the library; the arrays it points into live as long as this object."""

    def __init__(
        self, checkpoint: Path, cache_dir: Path, extra: Sequence[str] = (), pair_bound: bool | None = None
    ) -> None:
        """`extra`: compiler options for the library (library.load). `pair_bound`: quantize the weights with
        quantize_rows' pair bound; None: where the kernels need it (pair_bound_for; the tests that compare both
        kernel families give both the same weights)."""
        import whisper

        self.lib = library.load(cache_dir, extra=extra)
        self.kernels = str(self.lib.kernels().decode())  # "avx512-vnni" or "avx2"
        self.pair_bound = pair_bound_for(self.kernels, pair_bound)
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
        self.slot_size = int(self.lib.self_slot_size(self.handle))  # float16 values a beam's self-attention slot
        self._buffers = BufferPool()

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self.lib.free_model(handle)

    def _linear(self, layer: int, which: int, w: np.ndarray, bias: np.ndarray | None) -> None:
        arrays, args = packed_linear(self.lib, w, bias, self.pair_bound)
        self._keep += arrays
        self.lib.set_linear(self.handle, layer, which, *args)

    # Buffers, and thin wrappers over the library's calls (shapes documented in decoder.cpp).

    def caches(self, features: np.ndarray, slots: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(self-attention cache with `slots` row slots, cross cache with window i's audio keys/values in slot i)
        for encoder output `features` (windows, frames, width), the keys/values computed on `threads`. Lent from
        a pool: give them back with release() (or let them go; the pool then allocates anew)."""
        windows, frames = features.shape[0], features.shape[1]
        # Uninitialised: a step reads only positions already written, and cross_kv writes every value.
        cache = self._buffers.take(slots * self.slot_size, np.uint16).reshape(slots, self.slot_size)
        cross_slot = int(self.lib.cross_slot_size(self.handle, frames))
        cross = self._buffers.take(windows * cross_slot, np.uint16).reshape(windows, cross_slot)
        for i in range(windows):
            f = np.ascontiguousarray(features[i], dtype=np.float32)
            self.lib.cross_kv(self.handle, ptr(f), frames, cross[i].ctypes.data_as(ctypes.c_void_p), max(1, threads))
        return cache, cross

    def release(self, *arrays: np.ndarray) -> None:
        """Gives caches() arrays back to the pool, for the next call to reuse."""
        for a in arrays:
            self._buffers.give(a)

    def copy_slot(self, cache: np.ndarray, dst: int, src: int, length: int) -> None:
        self.lib.copy_slot(self.handle, ptr(cache), dst, src, length)

    def logits_buffer(self, rows: int) -> np.ndarray:
        """A (rows, vocab) float32 array for step(out=...), lent from the same pool as caches() (give it back
        with release()): 5 MB a step at 8 windows x 3 beams, which a fresh array has the kernel map and zero
        again at every step (2-3 % of a transcription on a Zen 3, perf)."""
        return self._buffers.take(rows * self.vocab, np.float32).reshape(rows, self.vocab)

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
        threads: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits (rows, vocab) for `tokens` (one per row, int32) at position `pos`, written into the first rows
        of `out` (logits_buffer()) when given; `threads` share the step (the same logits with any number)."""
        rows = len(tokens)
        if out is None:
            logits = np.empty((rows, self.vocab), np.float32)
        elif (
            out.dtype != np.float32 or out.ndim != 2 or out.shape[0] < rows or out.shape[1] != self.vocab
        ) or not out.flags.c_contiguous:
            raise ValueError(f"out of {out.dtype} {out.shape}: want C-contiguous float32 (>= {rows}, {self.vocab})")
        else:
            logits = out[:rows]  # the first rows of a C-contiguous array: contiguous too
        self.lib.step(
            self.handle, ptr(tokens), rows, windows, ptr(row_slot), ptr(window_slot), frames, pos,
            ptr(cache), ptr(cross), ptr(logits), max(1, threads),
        )  # fmt: skip
        return logits


class BufferPool:
    """Flat arrays lent out and given back, so a decoding call writes into pages an earlier one already mapped.

    Why: a fresh array's pages are zeroed by the kernel as they are first touched, under transparent huge pages
    2 MB at a time, and a step touches the self-attention cache sparsely (a few positions of each head's 448):
    allocating the caches anew each call spent 5-10 % of a transcription zeroing memory (perf, docs/
    benchmarks.md). What the pool keeps (at most `keep` arrays, the largest) stays mapped between calls."""

    def __init__(self, keep: int = 8) -> None:
        self._free: list[np.ndarray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, size: int, dtype: Any) -> np.ndarray:
        """A 1-d array of `size` elements of `dtype`, uninitialised: the smallest free one that fits, or new."""
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.dtype == dtype and b.size >= size]
            if fits:
                return self._free.pop(min(fits, key=lambda i: self._free[i].size))[:size]
        return np.empty(size, dtype)

    def give(self, array: np.ndarray) -> None:
        """Takes back an array take() lent (or a view of one: its whole buffer returns)."""
        base = array
        while isinstance(base.base, np.ndarray):
            base = base.base
        with self._lock:
            if any(b is base for b in self._free):
                return
            self._free.append(base)
            self._free.sort(key=lambda b: -b.nbytes)
            del self._free[self._keep :]


def packed_linear(
    lib: Any, w: np.ndarray, bias: np.ndarray | None, pair_bound: bool
) -> tuple[list[np.ndarray], tuple[Any, ...]]:
    """float32 weights (n, k) quantized per output row (quantize_rows) and packed by the library: (arrays the
    library will point into, which the caller keeps alive; the (weights, comp, scale, bias, k, n) arguments of
    set_linear)."""
    n, k = w.shape
    q, scale = quantize_rows(w, pair_bound)
    packed, comp = cache_aligned_zeros((n + 15) // 16 * 16 * k), np.zeros(n, np.int32)
    lib.pack(ptr(q), n, k, ptr(packed), ptr(comp))
    arrays = [packed, comp, scale] + ([] if bias is None else [bias])
    return arrays, (ptr(packed), ptr(comp), ptr(scale), None if bias is None else ptr(bias), k, n)


def cache_aligned_zeros(size: int) -> np.ndarray:
    """int8 zeros starting on a 64-byte boundary. numpy gives large arrays 16 mod 64, where every other 32-byte load
    of AVX2's kernels straddles two cache lines; the seven-bit kernel reads its weights again for each row, and lost
    its gain on such a buffer (kernels.h, linear_rows)."""
    raw = np.zeros(size + 64, np.int8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size]


def fused_qkv(attn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) float32 of a block's self-attention query|key|value as one product (Whisper's key projection
    has no bias: zeros in its place)."""
    weight = [f32(attn.query.weight), f32(attn.key.weight), f32(attn.value.weight)]
    bias = [f32(attn.query.bias), np.zeros(attn.key.weight.shape[0], np.float32), f32(attn.value.bias)]
    return np.concatenate(weight), np.concatenate(bias)


def f32(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)
