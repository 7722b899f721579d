"""Whisper's audio encoder on ONNX Runtime with int8 weights, feeding CTranslate2's decoder.

Why: once windows are decoded by parallel single-threaded workers (app.asr.engines.faster), the encoder is most
of CPU transcription time: it always runs on 30 s of frames. CTranslate2's int8 encoder takes ~155-185 ms per
window on 2 AVX-512 cores; ONNX Runtime's int8 kernels (VNNI) take ~100-125 ms for the same weights
(docs/benchmarks.md). CTranslate2's `Whisper.generate` accepts encoder output in place of log-mel features, so
only the encoder changes hands: decoding, timestamps, beam search and the batched pipeline stay as they are.

The export runs once per model: the openai-whisper checkpoint (itself converted from the same CTranslate2 weights,
app.asr.weights) -> torch AudioEncoder -> ONNX -> dynamic int8 quantisation of the linear layers with
per-output-channel scales, the grid CTranslate2's int8 weights were on. Cached under models_dir next to the
checkpoint; written to a temp name and renamed, so two workers exporting at once both end up with a whole file.

Two choices in that recipe come from ONNX Runtime's profiler (one 30 s window, one thread, Zen 4 with AVX-512
VNNI; docs/benchmarks.md). The first export spent 338 ms: 186 ms in self-attention written out as MatMul ->
Softmax -> MatMul (1,500 x 1,500 float32 scores per head, 54 MB per layer, more than the L3 holds) and 64 ms in
the two convolutions quantised to ConvInteger, a slow kernel, against 63 ms for all the int8 linear layers
together. So attention is exported as ONNX Runtime's fused `com.microsoft.MultiHeadAttention` (float32 in tiles,
the same numbers: 148 ms) and the convolutions stay float32 (19 ms, and exact): 244 ms in all, 0.72x.

Without VNNI (AVX2-only CPUs, e.g. Zen 3) ONNX Runtime multiplies u8 activations by s8 weights with VPMADDUBSW,
whose int16 pair sums saturate at full-range weights: there the output is 0.973 (jfk) / 0.941 (an episode
window) cosine-similar to the float encoder's, against 0.995 / 0.991 with 7-bit weights (reduce_range). Yet on
28 min of eval episodes on that machine the 8-bit export decoded *better* (WER 13.95 %; 7-bit 14.45 %; float
encoder 13.56 %; docs/benchmarks.md), so the recipe stays 8-bit everywhere: VNNI machines don't saturate.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_VERSION = "3"  # bump when the recipe changes, so stale caches are not reused
# (2: any number of frames; 3: fused attention, float32 convolutions)
_lock = threading.Lock()
log = logging.getLogger(__name__)


def _temp_beside(dest: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    return Path(tmp)


def export(checkpoint: Path, cache_dir: Path) -> Path:
    """The int8 ONNX encoder for an openai-whisper checkpoint (.pt), exported on first use; returns its path."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / f"{checkpoint.stem}-encoder-v{EXPORT_VERSION}-int8.onnx"
    with _lock:
        if dest.is_file():
            return dest
        import torch
        import whisper
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = whisper.load_model(str(checkpoint), device="cpu")
        encoder = _any_length_module(model.encoder.eval())
        mels = torch.zeros((1, model.dims.n_mels, 2 * model.dims.n_audio_ctx))
        fp32 = _temp_beside(dest)
        int8 = _temp_beside(dest)
        try:
            with torch.no_grad():
                # The TorchScript exporter (dynamo=False) needs neither onnxscript nor a network.
                torch.onnx.export(
                    encoder,
                    (mels,),
                    str(fp32),
                    input_names=["mel"],
                    output_names=["audio_features"],
                    dynamic_axes={"mel": {0: "batch", 2: "frames"}, "audio_features": {0: "batch", 1: "positions"}},
                    opset_version=17,
                    custom_opsets={"com.microsoft": 1},
                    dynamo=False,
                )
            # Linear layers only: ConvInteger is slower than the float32 convolution it replaces.
            quantize_dynamic(
                str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
            )
            os.replace(int8, dest)
        finally:
            fp32.unlink(missing_ok=True)
            int8.unlink(missing_ok=True)
    log.info("exported the int8 ONNX Whisper encoder to %s", dest)
    return dest


def fused_attention_op(n_head: int) -> Any:
    """attention(q, k, v) that the TorchScript exporter writes as one `com.microsoft.MultiHeadAttention` node
    (scale 1/sqrt(head size), as Whisper's); in torch it is SDPA. q is (batch, positions, width); k and v the same,
    or already split into heads, (batch, n_head, positions, width / n_head), the layout the node reads without a
    transpose (scripts/decoder_step_probe.py hands it precomputed cross-attention keys that way)."""
    import torch
    import torch.nn.functional as F

    class FusedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            batch, frames, width = q.shape

            def heads(x: torch.Tensor) -> torch.Tensor:
                return x if x.dim() == 4 else x.view(batch, -1, n_head, width // n_head).transpose(1, 2)

            out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
            return out.transpose(1, 2).reshape(batch, frames, width)

        @staticmethod
        def symbolic(g: Any, q: Any, k: Any, v: Any) -> Any:
            return g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=n_head)

    return FusedAttention.apply


def _fused_attention(n_head: int) -> Any:
    """A stand-in for openai-whisper's `MultiHeadAttention.qkv_attention` exported as `fused_attention_op`."""
    attention = fused_attention_op(n_head)

    def qkv_attention(q: Any, k: Any, v: Any, mask: Any = None) -> tuple[Any, None]:
        if mask is not None:  # the encoder's attention is never masked; the fused node takes no mask
            raise ValueError("the fused encoder attention takes no mask")
        return attention(q, k, v), None

    return qkv_attention


def _any_length_module(encoder: Any) -> Any:
    """The encoder as a module whose forward takes any even number of frames <= 3000 (exported with a dynamic
    frames axis; app.asr.encoder_input), its attention exported fused (`_fused_attention`). Patches `encoder`'s
    attention layers: pass one that is thrown away after the export."""
    import torch

    from app.asr.encoder_input import encode_any_length

    for block in encoder.blocks:
        block.attn.qkv_attention = _fused_attention(block.attn.n_head)

    class AnyLength(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            return encode_any_length(self.encoder, mel)

    return AnyLength()


class OnnxEncoder:
    """(batch, n_mels, frames <= 3000) log-mel -> (batch, frames / 2, d_model) audio features, float32."""

    # Takes fewer than 3000 frames (app.asr.encoder_input), with 8 s of silence after the speech: int8 weights
    # made the encoder touchier than bf16 about a short input. On segment-long clips (155 dev, 135 independent,
    # 8 real) 5 s cost 0.4-1.0 WER points; 8 s was within -0.6..+0.5 of full windows. Checked again with export
    # v3: 5 s still reads a word more wrong on the real clips (8.79 % vs 7.69 %; docs/benchmarks.md).
    trim_margin = 800

    def __init__(self, path: Path, *, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # Concurrent calls (one per decoding worker) each get all threads: measured faster on 2 cores than a
        # lock that lets one encoder run at a time, because the other worker is meanwhile in its 1-thread decode.
        opts.intra_op_num_threads = max(1, threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.n_mels = int(self.session.get_inputs()[0].shape[1])

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(["audio_features"], {"mel": np.ascontiguousarray(mel, dtype=np.float32)})
        return np.ascontiguousarray(features, dtype=np.float32)
