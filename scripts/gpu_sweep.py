"""The batched openai-whisper engine alone, across batch sizes and fallback modes, with every decoding pass timed.

`podbrief bench transcribe` gives the figures that count (baseline and engines on the same audio in one run);
this answers the follow-up questions without paying for the baseline again: how throughput grows with the batch
size, whether the fallback temperatures go faster in one batch or one after another, and how one transcription
splits into decoding passes (rows, steps, seconds each) and the rest. Every timed run is instrumented (a
synchronise around each decoding call, which ends in one anyway). Run by scripts/gpu_bench.sh before the bench;
prints one JSON object whose "best_batch_size" the bench then uses.

    python scripts/gpu_sweep.py --audio .gpu/audio/*.wav --model .gpu/tiny.en.pt --device cuda \
        --tile 2400 --batch-sizes 64 128 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.asr.bench import _sync, load_clips, make_engine, tile
from app.asr.hygiene import clean_segments
from app.asr.wer import corpus_wer


def instrument(engine: Any, device: str, calls: list[dict[str, Any]]) -> None:
    """Record rows, temperature, steps and seconds of every decoding call the engine makes."""
    run_task = engine._run_task

    def timed(mels: Any, temperature: Any, **kwargs: Any) -> Any:
        _sync(device)
        start = time.perf_counter()
        results = run_task(mels, temperature, **kwargs)
        _sync(device)
        calls.append(
            {
                "rows": int(mels.shape[0]),
                "temperature": temperature if isinstance(temperature, float | int) else "per-row",
                "steps": max((len(r.tokens) for r in results), default=0),
                "sample_len": kwargs.get("sample_len"),
                "seconds": round(time.perf_counter() - start, 4),
            }
        )
        return results

    engine._run_task = timed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--audio", nargs="+", type=Path, required=True)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tile", type=float, default=2400)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    clips = tile(load_clips(args.audio), args.tile)
    audio, ref = clips[0].audio, clips[0].reference or ""
    seconds = audio.size / 16000
    report: dict[str, Any] = {"audio_seconds": round(seconds, 1), "device": args.device, "runs": {}}
    best: tuple[float, int] = (float("inf"), args.batch_sizes[0])
    for batch in args.batch_sizes:
        for parallel in (True, False):
            name = f"batch{batch}-{'parallel' if parallel else 'sequential'}-fallback"
            engine: Any = make_engine(
                "openai-whisper-batched", device=args.device, model=args.model, batch_size=batch, compute_type="int8"
            )
            engine.parallel_fallback = parallel
            engine.warm_up()
            runs = []
            for _ in range(args.repeat):
                calls: list[dict[str, Any]] = []
                instrument(engine, args.device, calls)
                _sync(args.device)
                start = time.perf_counter()
                text = " ".join(s.text for s in clean_segments(engine.transcribe(audio)))
                _sync(args.device)
                wall = time.perf_counter() - start
                del engine._run_task  # the class's own method again
                runs.append(
                    {
                        "wall_seconds": round(wall, 3),
                        "rtf_x": round(seconds / wall, 1),
                        "wer": round(corpus_wer([(ref, text)]), 4) if ref else None,
                        "decode_seconds": round(sum(c["seconds"] for c in calls), 3),
                        "calls": calls,
                    }
                )
                print(f"sweep: {name}: {runs[-1]}", file=sys.stderr, flush=True)
            report["runs"][name] = runs
            fastest = min(r["wall_seconds"] for r in runs)
            if parallel and fastest < best[0]:
                best = (fastest, batch)
    report["best_batch_size"] = best[1]
    try:
        import torch

        if torch.cuda.is_available():
            report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    except ImportError:
        pass
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
