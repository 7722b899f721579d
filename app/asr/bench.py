"""`podbrief bench transcribe`: every engine against the openai-whisper baseline, same audio, same weights, one run.

The baseline is openai-whisper's plain `model.transcribe()` on the weights converted from the same CTranslate2
model every other engine uses. Each engine is loaded and warmed up before it is timed (first calls pay for
allocation and kernel choice); wall time covers decoding + transcription + hygiene, not audio file decoding
(done once up front, shared by all). WER is a fraction (0.028 = 2.8 %), over the files that have a reference
beside them (NAME.txt, NAME.stm, transcripts.tsv), normalised with Whisper's English normaliser.

Runs without the service's dependencies (no settings, no database) so scripts/gpu_bench.sh can use it on a bare
GPU machine: `python -m app.asr.bench --audio ... --device cuda`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.asr.audio import SAMPLE_RATE, load_audio, load_raw_pcm16
from app.asr.cpu_encoder import cpu_fields, cpu_flags
from app.asr.engines.base import Engine
from app.asr.hygiene import clean_segments
from app.asr.select import EngineSpec, build, check_device
from app.asr.wer import corpus_wer, find_reference

BASELINE = "openai-whisper"
# Bench name -> engine registry name; "openai-whisper" is the baseline (plain transcribe()).
BENCH_ENGINES = {
    BASELINE: "openai-whisper-sequential",
    "openai-whisper-batched": "openai-whisper-batched",
    "faster-whisper": "faster-whisper",
    "faster-whisper-sequential": "faster-whisper-sequential",
    # openai-whisper's own per-row Python timestamp filter, to measure what the vectorised one buys (GPU).
    "openai-whisper-batched-looprules": "openai-whisper-batched",
    # Fallback temperatures one after another (the CPU way) instead of in one batch, on the GPU.
    "openai-whisper-batched-seqfallback": "openai-whisper-batched",
    # Variants of the production CPU engine, to show what each choice costs or buys.
    "faster-whisper-greedy": "faster-whisper",
    "faster-whisper-beam2": "faster-whisper",
    "faster-whisper-silero": "faster-whisper",
    "faster-whisper-ct2-encoder": "faster-whisper",
    "faster-whisper-onnx-encoder": "faster-whisper",
    "faster-whisper-native-encoder": "faster-whisper",
    "faster-whisper-bf16-encoder": "faster-whisper",
    "faster-whisper-30s-encoder": "faster-whisper",
    "faster-whisper-ct2-decoder": "faster-whisper",
    "faster-whisper-native-decoder": "faster-whisper",
}
# Attributes set on the built engine for the variants above.
_VARIANTS: dict[str, dict[str, object]] = {
    "openai-whisper-batched-looprules": {"vectorised_rules": False},
    "openai-whisper-batched-seqfallback": {"parallel_fallback": False},
    "faster-whisper-greedy": {"beam_size": 1},
    "faster-whisper-beam2": {"beam_size": 2},  # the default before 2026-12-04
    "faster-whisper-silero": {"vad": "silero"},
    # Each CPU encoder by name, whatever `auto` picks on this CPU (app.asr.cpu_encoder).
    "faster-whisper-ct2-encoder": {"encoder": "ctranslate2"},
    "faster-whisper-onnx-encoder": {"encoder": "onnx"},
    "faster-whisper-native-encoder": {"encoder": "native"},
    "faster-whisper-bf16-encoder": {"encoder": "torch-bf16"},
    # Every window's encoder input padded to 30 s, as Whisper was trained (app.asr.encoder_input).
    "faster-whisper-30s-encoder": {"trim_encoder_input": False},
    # Each CPU decoder by name, whatever `auto` picks on this CPU (app.asr.native).
    "faster-whisper-ct2-decoder": {"decoder": "ctranslate2"},
    "faster-whisper-native-decoder": {"decoder": "native"},
}
DEFAULT_ENGINES = (
    BASELINE,
    "openai-whisper-batched",
    "faster-whisper",
    "faster-whisper-ct2-encoder",
    "faster-whisper-onnx-encoder",
    "faster-whisper-30s-encoder",
    "faster-whisper-ct2-decoder",
    "faster-whisper-greedy",
    "faster-whisper-sequential",
)


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    reference: str | None


def load_clips(paths: Sequence[Path]) -> list[Clip]:
    clips = []
    for path in paths:
        audio = load_raw_pcm16(path) if path.suffix == ".raw" else load_audio(path)
        clips.append(Clip(name=path.name, audio=audio, reference=find_reference(path)))
    return clips


def tile(clips: Sequence[Clip], seconds: float, gap: float = 0.5) -> list[Clip]:
    """One long clip: the inputs back to back (gap seconds of silence between) until `seconds` is reached."""
    silence = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    refs: list[str] = []
    total = 0.0
    while total < seconds:
        for clip in clips:
            parts.extend([clip.audio, silence])
            refs.append(clip.reference or "")
            total += clip.audio.size / SAMPLE_RATE + gap
            if total >= seconds:
                break
    has_refs = all(c.reference for c in clips)
    return [
        Clip(name=f"tiled-{seconds:.0f}s", audio=np.concatenate(parts), reference=" ".join(refs) if has_refs else None)
    ]


# The instruction sets the CPU engines choose kernels by (app.asr.cpu_encoder, app.asr.native), named in `machine`.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU a run measured: ratios differ from one CPU kind to the next (an AMD Zen 3 has no AVX-512; a Zen 4
    and an Emerald Rapids do, the latter with AMX), so every report says which one it was."""
    fields = cpu_fields(cpuinfo)
    flags = cpu_flags(cpuinfo)

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "family": number("cpu family"),
        "model": number("model"),
        "cores": os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def _default_cache_dir() -> Path:
    try:
        from app.config import get_settings

        return get_settings().models_dir / "openai-whisper"
    except ImportError:  # bare GPU machine
        return Path("var/models/openai-whisper")


def make_engine(name: str, *, device: str, model: str, batch_size: int, compute_type: str) -> Engine:
    spec = EngineSpec(
        engine=BENCH_ENGINES[name],
        model=model,
        device=device,
        compute_type="int8_float16" if device.startswith("cuda") and compute_type == "int8" else compute_type,
        batch_size=batch_size,
        cache_dir=str(_default_cache_dir()),
    )
    engine = build(spec)
    for attr, value in _VARIANTS.get(name, {}).items():
        setattr(engine, attr, value)
    engine.name = name
    return engine


def run_engine(
    engine: Engine, clips: Sequence[Clip], repeat: int, budget: float | None = None
) -> tuple[float, float, list[str]]:
    """(best wall seconds, CPU seconds of that run, texts). CPU time is all threads of this process: on a
    shared machine it moves much less with other people's load than wall time does. With a budget, no new
    repeat starts once that many seconds are spent (a slow baseline runs once, fast engines `repeat` times)."""
    engine.warm_up()
    best, best_cpu = float("inf"), 0.0
    texts: list[str] = []
    spent = 0.0
    for _ in range(max(1, repeat)):
        if budget is not None and spent >= budget:
            break
        _sync(engine.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        texts = []
        for clip in clips:
            segments = clean_segments(engine.transcribe(clip.audio))
            texts.append(" ".join(s.text for s in segments))
        _sync(engine.device)
        wall = time.perf_counter() - start
        spent += wall
        if wall < best:
            best, best_cpu = wall, time.process_time() - cpu_start
    return best, best_cpu, texts


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bench(
    paths: Sequence[Path],
    *,
    device: str = "cpu",
    engines: Sequence[str] | None = None,
    model: str = "tiny.en",
    batch_size: int = 8,
    compute_type: str = "int8",
    repeat: int = 1,
    repeat_budget: float | None = None,
    tile_seconds: float | None = None,
    log: Any = None,
) -> dict[str, Any]:
    log = log or sys.stderr
    names = list(engines or DEFAULT_ENGINES)
    unknown = [n for n in names if n not in BENCH_ENGINES]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {list(BENCH_ENGINES)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)  # speedups need the baseline, measured in this same run
    # No ratio without the baseline: a device it can't run on (no CUDA here) is an error before anything loads.
    check_device(BENCH_ENGINES[BASELINE], device)
    clips = load_clips(paths)
    if tile_seconds:
        clips = tile(clips, tile_seconds)
    audio_seconds = sum(c.audio.size for c in clips) / SAMPLE_RATE
    with_ref = [i for i, c in enumerate(clips) if c.reference]

    results: dict[str, dict[str, Any]] = {}
    texts: dict[str, list[str]] = {}
    for name in names:
        print(f"bench: {name} on {device} ({audio_seconds:.1f} s of audio) ...", file=log, flush=True)
        try:
            engine = make_engine(name, device=device, model=model, batch_size=batch_size, compute_type=compute_type)
            wall, cpu, texts[name] = run_engine(engine, clips, repeat, repeat_budget)
        except Exception as exc:  # one engine missing on this machine must not lose the others' figures
            results[name] = {"wall_seconds": None, "rtf_x": None, "wer": None, "error": f"{type(exc).__name__}: {exc}"}
            print(f"bench: {name} failed: {exc}", file=log, flush=True)
            continue
        wer_value = corpus_wer([(clips[i].reference or "", texts[name][i]) for i in with_ref]) if with_ref else None
        results[name] = {
            "wall_seconds": round(wall, 3),
            "rtf_x": round(audio_seconds / wall, 2),
            "wer": None if wer_value is None else round(wer_value, 4),
            "cpu_seconds": round(cpu, 3),
        }
        if getattr(engine, "encoder_used", ""):
            results[name]["encoder"] = engine.encoder_used  # type: ignore[attr-defined]
        if getattr(engine, "decoder_used", ""):
            results[name]["decoder"] = engine.decoder_used  # type: ignore[attr-defined]
        if getattr(engine, "kernels_used", ""):
            results[name]["kernels"] = engine.kernels_used  # type: ignore[attr-defined]
        print(f"bench: {name}: {results[name]}", file=log, flush=True)

    base_wall = results.get(BASELINE, {}).get("wall_seconds")
    speedup: dict[str, float | None] = {}
    for name, r in results.items():
        speedup[name] = round(base_wall / r["wall_seconds"], 2) if base_wall and r["wall_seconds"] else None
        if name in texts and BASELINE in texts:
            # How far each engine's text is from the baseline's (same weights: should be small).
            r["wer_vs_baseline"] = round(corpus_wer(list(zip(texts[BASELINE], texts[name], strict=True))), 4)
    return {
        "audio_seconds": round(audio_seconds, 2),
        "engines": results,
        "baseline": BASELINE,
        "speedup_vs_baseline": speedup,
        "device": device,
        "machine": machine(),
        "model": model,
        "batch_size": batch_size,
        "files": [c.name for c in clips],
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", nargs="+", type=Path, required=True, help="audio files (any format PyAV reads)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--engines", nargs="+", default=None, choices=list(BENCH_ENGINES), help="subset to run")
    p.add_argument("--model", default="tiny.en", help="tiny.en (bundled), a CTranslate2 folder or a .pt file")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--compute-type", default="int8", help="faster-whisper compute type (default int8)")
    p.add_argument("--repeat", type=int, default=1, help="time each engine N times and keep the best")
    p.add_argument(
        "--repeat-budget", type=float, default=None, metavar="SECONDS", help="start no repeat after this much time"
    )
    p.add_argument("--tile", type=float, default=None, metavar="SECONDS", help="tile the inputs to this length")
    p.add_argument("--json", action="store_true", help="print one JSON object (the default output is JSON too)")


def run_from_args(args: argparse.Namespace) -> int:
    report = bench(
        args.audio,
        device=args.device,
        engines=args.engines,
        model=args.model,
        batch_size=args.batch_size,
        compute_type=args.compute_type,
        repeat=args.repeat,
        repeat_budget=args.repeat_budget,
        tile_seconds=args.tile,
    )
    print(json.dumps(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.asr.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
