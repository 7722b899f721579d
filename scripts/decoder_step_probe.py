"""Probe: what one Whisper decoding step costs on this CPU in CTranslate2, and in three other int8 decoders.

Not part of the service. Why it exists: on AMD CPUs CTranslate2's decoder is most of CPU transcription time
(docs/benchmarks.md): oneDNN repacks the int8 weights at every call, and every beam attends over its own copy of
the window's cross-attention keys and values (float32, 18 MB a window for tiny.en). This measures the
alternatives tried so far, so the next attempt starts from figures:

- `ctranslate2`: `Whisper.generate` (beam 2, up to 448 tokens) on W real 25 s windows of an eval episode, encoded
  by our int8 ONNX encoder; ms per step = wall / mean tokens per window.
- `onnxruntime`: openai-whisper's TextDecoder exported as one step (self-attention cache in and out, cross keys
  and values computed once per window in the (window, head, frame, dim) layout ONNX Runtime's MultiHeadAttention
  reads without a transpose, shared by a window's beams), linear layers int8 (dynamic, per channel). Driven for
  100 steps with 2 rows a window, argmax, no beam reordering and no timestamp rules: a lower bound for a real
  decoder built on it.
- `torch`: the same decoder step in eager torch: linear layers int8 (`quantize_dynamic`, fbgemm: weights packed
  once, not at every call), query|key|value in one product, self-attention keys and values in a preallocated
  cache, cross keys and values computed once per window and shared by its beams (the beams are the query length
  of one attention call). Same driver, same lower bound.
- `native`: the step hand-written in C++ that the engine now uses (app/asr/native, AVX-512 VNNI or AVX2
  kernels, built with the system g++ -march=native): int8 weights packed once, cross keys and values float16 and
  shared by a window's beams. Same driver, same lower bound; `native_agreement` is the share of 60 steps on 2
  windows at which its argmax equals openai-whisper's float32 torch decoder's, both fed the float32 decoder's greedy
  tokens (checks the step computes the right thing). Left out (null, with the reason) without g++ or AVX2.

    .venv/bin/python scripts/decoder_step_probe.py [--windows 1 4 8] [--audio EPISODE.mp3]

Prints JSON: per window count, ms per step for each runtime (one thread each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BEAMS = 2
SOT = 50257  # tiny.en's <|startoftranscript|>


def export_decoder(checkpoint: Path, out: Path) -> tuple[Path, Path, int]:
    """(step.onnx, cross.onnx, layers), both int8."""
    import torch
    import whisper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from app.asr.onnx_encoder import fused_attention_op

    dec = whisper.load_model(str(checkpoint), device="cpu").float().eval().decoder.requires_grad_(False)
    n_head, width, layers = dec.blocks[0].attn.n_head, dec.token_embedding.weight.shape[1], len(dec.blocks)
    mha = fused_attention_op(n_head)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = dec

        def forward(self, tokens: torch.Tensor, pos: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = self.dec.token_embedding(tokens) + self.dec.positional_embedding[pos].unsqueeze(0)
            presents: list[torch.Tensor] = []
            for i, blk in enumerate(self.dec.blocks):
                h = blk.attn_ln(x)
                k = torch.cat([caches[2 * i], blk.attn.key(h)], 1)
                v = torch.cat([caches[2 * i + 1], blk.attn.value(h)], 1)
                presents += [k, v]
                x = x + blk.attn.out(mha(blk.attn.query(h), k, v))
                q = blk.cross_attn.query(blk.cross_attn_ln(x))
                rows = q.shape[0]
                # A window's beams are one query sequence against its one copy of the audio keys and values.
                q = q.reshape(rows // BEAMS, BEAMS, width)
                a = mha(q, caches[2 * layers + 2 * i], caches[2 * layers + 2 * i + 1]).reshape(rows, 1, width)
                x = x + blk.cross_attn.out(a)
                x = x + blk.mlp(blk.mlp_ln(x))
            logits = self.dec.ln(x)[:, 0] @ self.dec.token_embedding.weight.T
            return (logits, *presents)

    class Cross(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = dec

        def forward(self, xa: torch.Tensor) -> tuple[torch.Tensor, ...]:
            w, f, _ = xa.shape
            out: list[torch.Tensor] = []
            for blk in self.dec.blocks:
                for proj in (blk.cross_attn.key, blk.cross_attn.value):
                    out.append(proj(xa).view(w, f, n_head, width // n_head).transpose(1, 2).contiguous())
            return tuple(out)

    names = [f"self_{kv}{i}" for i in range(layers) for kv in "kv"]
    cross_names = [f"cross_{kv}{i}" for i in range(layers) for kv in "kv"]
    args = (
        torch.zeros(2 * BEAMS, 1, dtype=torch.long),
        torch.tensor([3]),
        *[torch.zeros(2 * BEAMS, 3, width) for _ in names],
        *[torch.zeros(2, n_head, 1500, width // n_head) for _ in cross_names],
    )
    axes = {"tokens": {0: "n"}, **{n: {0: "n", 1: "t"} for n in names}, **{n: {0: "w", 2: "f"} for n in cross_names}}
    paths = out / "step.onnx", out / "cross.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Step(), args, str(paths[0]), input_names=["tokens", "pos", *names, *cross_names],
            output_names=["logits", *[f"present_{n}" for n in names]], dynamic_axes=axes, opset_version=17,
            custom_opsets={"com.microsoft": 1}, dynamo=False,
        )  # fmt: skip
        torch.onnx.export(
            Cross(), (torch.zeros(2, 1500, width),), str(paths[1]), input_names=["xa"], output_names=cross_names,
            dynamic_axes={"xa": {0: "w", 1: "f"}}, opset_version=17, dynamo=False,
        )  # fmt: skip
    quantized = []
    for p in paths:
        q8 = p.with_name(p.stem + "-int8.onnx")
        quantize_dynamic(
            str(p), str(q8), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
        quantized.append(q8)
    return quantized[0], quantized[1], layers


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ctranslate2_ms_per_step(features: np.ndarray, prompt: list[int]) -> float:
    import ctranslate2

    from app.asr.weights import ct2_model

    model = ctranslate2.models.Whisper(str(ct2_model("tiny.en")), device="cpu", compute_type="int8", intra_threads=1)
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
    best, tokens = float("inf"), 1
    for _ in range(3):
        start = time.perf_counter()
        results = model.generate(view, [prompt] * len(features), beam_size=BEAMS, max_length=448)
        best = min(best, time.perf_counter() - start)
        tokens = sum(len(r.sequences_ids[0]) for r in results)
    return 1000 * best / (tokens / len(features))


def onnxruntime_ms_per_step(step: Any, cross: Any, layers: int, features: np.ndarray, steps: int = 100) -> float:
    kv = cross.run(None, {"xa": np.ascontiguousarray(features)})
    rows = len(features) * BEAMS
    width = features.shape[2]
    caches = [np.zeros((rows, 0, width), np.float32) for _ in range(2 * layers)]
    tokens = np.full((rows, 1), SOT, np.int64)
    start = time.perf_counter()
    for pos in range(steps):
        feeds: dict[str, np.ndarray] = {"tokens": tokens, "pos": np.array([pos], np.int64)}
        feeds.update({f"self_{kv_}{i}": caches[2 * i + j] for i in range(layers) for j, kv_ in enumerate("kv")})
        feeds.update({f"cross_{kv_}{i}": kv[2 * i + j] for i in range(layers) for j, kv_ in enumerate("kv")})
        logits, *caches = step.run(None, feeds)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        tokens = logprobs.argmax(axis=1)[:, None].astype(np.int64)
    return 1000 * (time.perf_counter() - start) / steps


def torch_step(checkpoint: Path) -> Any:
    """(step(tokens, pos, caches, cross) -> logits, cross_kv(xa) -> per-layer (K, V), caches(rows) -> list)."""
    import torch
    import torch.nn.functional as F
    import whisper

    from app.asr.native.model import fused_qkv

    torch.set_num_threads(1)
    dec = whisper.load_model(str(checkpoint), device="cpu").float().eval().decoder.requires_grad_(False)
    n_head, width = dec.blocks[0].attn.n_head, dec.token_embedding.weight.shape[1]
    head = width // n_head

    def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        lin.weight.data = weight.clone()
        if bias is not None:
            lin.bias.data = bias.clone()
        return lin

    fused = torch.nn.ModuleDict(
        {
            "proj": linear(dec.token_embedding.weight, None),
            **{f"qkv{i}": linear(*map(torch.from_numpy, fused_qkv(b.attn))) for i, b in enumerate(dec.blocks)},
        }
    )
    q8 = torch.ao.quantization.quantize_dynamic(
        torch.nn.ModuleDict({"dec": dec, "fused": fused}), {torch.nn.Linear}, dtype=torch.qint8
    )
    qdec, qf = q8["dec"], q8["fused"]

    def cross_kv(xa: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(xa.shape[0], -1, n_head, head).transpose(1, 2).contiguous()

        return [(heads(b.cross_attn.key(xa)), heads(b.cross_attn.value(xa))) for b in qdec.blocks]

    def caches(rows: int) -> list[torch.Tensor]:
        return [torch.zeros(rows, n_head, 448, head) for _ in range(2 * len(qdec.blocks))]

    def step(tokens: torch.Tensor, pos: int, cache: list[torch.Tensor], cross: list[Any]) -> torch.Tensor:
        rows, windows = tokens.shape[0], cross[0][0].shape[0]
        x = qdec.token_embedding(tokens) + qdec.positional_embedding[pos]
        for i, b in enumerate(qdec.blocks):
            qkv = qf[f"qkv{i}"](b.attn_ln(x)).view(rows, 3, n_head, head)
            k, v = cache[2 * i], cache[2 * i + 1]
            k[:, :, pos], v[:, :, pos] = qkv[:, 1], qkv[:, 2]
            a = F.scaled_dot_product_attention(qkv[:, 0].unsqueeze(2), k[:, :, : pos + 1], v[:, :, : pos + 1])
            x = x + b.attn.out(a.reshape(rows, width))
            # A window's beams are the query length of one attention over its one copy of the audio keys/values.
            q = b.cross_attn.query(b.cross_attn_ln(x)).view(windows, rows // windows, n_head, head).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, *cross[i])
            x = x + b.cross_attn.out(a.transpose(1, 2).reshape(rows, width))
            x = x + b.mlp(b.mlp_ln(x))
        return qf["proj"](qdec.ln(x))

    return step, cross_kv, caches


def torch_ms_per_step(runtime: Any, features: np.ndarray, steps: int = 100) -> float:
    import torch

    step, cross_kv, caches = runtime
    with torch.inference_mode():
        cross = cross_kv(torch.from_numpy(np.ascontiguousarray(features)))
        rows = len(features) * BEAMS
        cache = caches(rows)
        tokens = torch.full((rows,), SOT, dtype=torch.long)
        start = time.perf_counter()
        for pos in range(steps):
            tokens = step(tokens, pos, cache, cross).log_softmax(-1).argmax(-1)
        return 1000 * (time.perf_counter() - start) / steps


def native_greedy(native: Any, features: np.ndarray, steps: int, beams: int = 1) -> tuple[np.ndarray, float]:
    """(argmax tokens [rows, steps], ms per step) of app.asr.native's step from <|startoftranscript|>,
    `beams` rows a window (numpy argmax: no beam search, no timestamp rules)."""
    w, f, _ = features.shape
    rows = w * beams
    cache, cross = native.caches(features, rows)
    row_slot, window_slot = np.arange(rows, dtype=np.int32), np.arange(w, dtype=np.int32)
    tokens = np.full(rows, SOT, np.int32)
    out = []
    start = time.perf_counter()
    for pos in range(steps):
        logits = native.step(tokens, w, row_slot, window_slot, f, pos, cache, cross)
        tokens = logits.argmax(axis=1).astype(np.int32)
        out.append(tokens)
    return np.stack(out, axis=1), 1000 * (time.perf_counter() - start) / steps


def native_agreement(native: Any, checkpoint: Path, features: np.ndarray, steps: int = 60) -> float:
    """Share of steps at which the native step's argmax equals openai-whisper's float32 torch decoder's, both fed
    the float32 decoder's own greedy tokens (teacher-forced: one early tie broken the other way would otherwise
    shift every later comparison)."""
    import torch
    import whisper

    dec = whisper.load_model(str(checkpoint), device="cpu").float().eval().decoder
    tokens = torch.full((len(features), 1), SOT)
    with torch.no_grad():
        audio = torch.from_numpy(np.ascontiguousarray(features))
        for _ in range(steps):
            tokens = torch.cat([tokens, dec(tokens, audio)[:, -1].argmax(-1, keepdim=True)], dim=1)
    want = tokens.numpy().astype(np.int32)
    w, f, _ = features.shape
    cache, cross = native.caches(features, w)
    slots = np.arange(w, dtype=np.int32)
    same = 0
    for pos in range(steps):
        logits = native.step(np.ascontiguousarray(want[:, pos]), w, slots, slots, f, pos, cache, cross)
        same += int((logits.argmax(axis=1) == want[:, pos + 1]).sum())
    return same / (w * steps)


def main() -> None:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

    from app.asr import onnx_encoder
    from app.asr.audio import SAMPLE_RATE, load_audio
    from app.asr.weights import ct2_model, openai_checkpoint
    from app.config import get_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--windows", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--audio", type=Path, default=Path("../shared/eval/audio/dev-ai_systems-01.mp3"))
    args = p.parse_args()

    models = Path(get_settings().models_dir)
    checkpoint = Path(openai_checkpoint("tiny.en", models))
    fw = WhisperModel(str(ct2_model("tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    prompt = list(Tokenizer(fw.hf_tokenizer, False, task="transcribe", language="en").sot_sequence)
    audio = load_audio(args.audio)
    n = max(args.windows)
    span = 25 * SAMPLE_RATE
    if audio.size < n * span:
        raise SystemExit(f"{args.audio} holds fewer than {n} windows of 25 s")
    mels = np.stack(
        [
            fw.feature_extractor(np.pad(audio[i * span : (i + 1) * span], (0, 5 * SAMPLE_RATE)))[:, :3000]
            for i in range(n)
        ]
    ).astype(np.float32)
    encoder = onnx_encoder.OnnxEncoder(onnx_encoder.export(checkpoint, models), threads=1)
    features = np.concatenate([encoder(mels[i : i + 1]) for i in range(n)])
    with tempfile.TemporaryDirectory() as tmp:
        step_path, cross_path, layers = export_decoder(checkpoint, Path(tmp))
        step, cross = _session(step_path), _session(cross_path)
        runtime = torch_step(checkpoint)
        native: Any = None
        try:
            from app.asr.native.model import NativeModel

            native = NativeModel(checkpoint, models)
        except Exception as exc:  # the other runtimes' figures stand without it
            native_missing = f"{type(exc).__name__}: {exc}"
        report: list[dict[str, Any]] = []
        for w in args.windows:
            ct2 = ctranslate2_ms_per_step(features[:w], prompt)
            ort_ms = onnxruntime_ms_per_step(step, cross, layers, features[:w])
            torch_ms_per_step(runtime, features[:w], steps=5)  # first calls pick kernels and allocate
            torch_ms = torch_ms_per_step(runtime, features[:w])
            report.append({"windows": w, "beams": BEAMS, "ctranslate2_ms_per_step": round(ct2, 2),
                           "onnxruntime_ms_per_step": round(ort_ms, 2), "ratio": round(ct2 / ort_ms, 2),
                           "torch_ms_per_step": round(torch_ms, 2),
                           "torch_ratio": round(ct2 / torch_ms, 2)})  # fmt: skip
            if native is not None:
                native_greedy(native, features[:w], 5, beams=BEAMS)
                native_ms = native_greedy(native, features[:w], 100, beams=BEAMS)[1]
                report[-1].update(native_ms_per_step=round(native_ms, 2), native_ratio=round(ct2 / native_ms, 2))
        summary: dict[str, Any] = {"threads": 1, "results": report}
        if native is None:
            summary["native"] = None
            summary["native_missing"] = native_missing
        else:
            summary["native_agreement"] = round(native_agreement(native, checkpoint, features[:2]), 3)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
