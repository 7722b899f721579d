"""Choosing an engine: CUDA visible -> openai-whisper torch engine, batched; else faster-whisper on CPU.

Settings asr_engine / asr_model / asr_device / asr_compute_type / asr_batch_size override the choice.
Engines are cached per configuration: a worker loads its model once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from app.asr.engines.base import Engine

if TYPE_CHECKING:
    from app.config import Settings

# Names the CLI/bench accept; the setting value "openai-whisper" means the batched torch engine.
ENGINES = ("faster-whisper", "faster-whisper-sequential", "openai-whisper-batched", "openai-whisper-sequential")
CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 128
_ALIASES = {"openai-whisper": "openai-whisper-batched", "torch": "openai-whisper-batched"}
_lock = threading.Lock()


@dataclass(frozen=True)
class EngineSpec:
    engine: str
    model: str
    device: str
    compute_type: str
    batch_size: int
    cache_dir: str
    encoder: str = "auto"  # faster-whisper on CPU: auto | onnx | native | torch-bf16 | ctranslate2 (cpu_encoder)
    decoder: str = "auto"  # faster-whisper on CPU: auto | native | ctranslate2 (app.asr.native)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def check_device(engine: str, device: str) -> None:
    """Raise ValueError, saying why, unless `engine` (one of ENGINES) can run on `device` here.

    Checked before a model loads: asked for CUDA where there is none, the libraries fail deep inside with
    "Torch not compiled with CUDA enabled" or "CUDA driver version is insufficient for CUDA runtime version".
    faster-whisper runs on CTranslate2's CUDA, the openai-whisper engines on torch's: either may see none.
    """
    if device == "cpu":
        return
    kind, colon, index_text = device.partition(":")
    if kind != "cuda" or (colon and not index_text.isdigit()):
        # "auto" never gets here from the service or `podbrief transcribe` (resolve() picks); the bench wants one.
        raise ValueError(f"unknown device {device!r} (choose from cpu, cuda, cuda:N)")
    index = int(index_text or 0)
    if engine.startswith("faster-whisper"):
        import ctranslate2

        runtime, count = "CTranslate2", int(ctranslate2.get_cuda_device_count())
    else:
        import torch

        runtime, count = "torch", torch.cuda.device_count() if cuda_available() else 0
    if index >= count:
        seen = f"{count} CUDA device{'s' if count != 1 else ''}" if count else "no CUDA device"
        raise ValueError(f"device {device!r}: {runtime} ({engine}) sees {seen} here; use cpu or auto")


def resolve(
    settings: Settings | None = None,
    *,
    engine: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> EngineSpec:
    if settings is None:
        from app.config import get_settings  # lazy: the GPU bench runs without the service's dependencies

        settings = get_settings()
    s = settings
    dev = device or s.asr_device
    if dev == "auto":
        dev = "cuda" if cuda_available() else "cpu"
    name = engine or s.asr_engine
    if name == "auto":
        # ctranslate2 on the GPU machine needs CUDA 12 libraries that are often missing; torch's work anywhere.
        name = "openai-whisper-batched" if dev.startswith("cuda") else "faster-whisper"
    name = _ALIASES.get(name, name)
    if name not in ENGINES:
        raise ValueError(f"unknown ASR engine {name!r} (choose from {', '.join(ENGINES)})")
    compute_type = s.asr_compute_type
    if dev.startswith("cuda") and compute_type == "int8":
        compute_type = "int8_float16"  # int8 weights, fp16 activations: the fast CUDA path
    return EngineSpec(
        engine=name,
        model=model or s.asr_model,
        device=dev,
        compute_type=compute_type,
        batch_size=batch_size or s.asr_batch_size or (GPU_BATCH_SIZE if dev.startswith("cuda") else CPU_BATCH_SIZE),
        cache_dir=str(s.models_dir / "openai-whisper"),
        encoder=s.asr_cpu_encoder,
        decoder=s.asr_cpu_decoder,
    )


def build(spec: EngineSpec) -> Engine:
    from pathlib import Path

    check_device(spec.engine, spec.device)
    if spec.engine.startswith("faster-whisper"):
        from app.asr.engines.faster import FasterWhisperEngine

        batch = 1 if spec.engine == "faster-whisper-sequential" else spec.batch_size
        return FasterWhisperEngine(
            spec.model,
            device=spec.device,
            compute_type=spec.compute_type,
            batch_size=batch,
            encoder=spec.encoder,
            decoder=spec.decoder,
            cache_dir=Path(spec.cache_dir),
        )
    from app.asr.engines.openai import OpenAIWhisperEngine

    mode = "sequential" if spec.engine == "openai-whisper-sequential" else "batched"
    return OpenAIWhisperEngine(
        spec.model, device=spec.device, batch_size=spec.batch_size, mode=mode, cache_dir=Path(spec.cache_dir)
    )


@lru_cache(maxsize=4)
def _cached(spec: EngineSpec) -> Engine:
    return build(spec)


def get_engine(settings: Settings | None = None, **overrides: object) -> Engine:
    """The engine for these settings (cached: the model loads once per process)."""
    spec = resolve(settings, **overrides)  # type: ignore[arg-type]
    with _lock:
        return _cached(spec)
