"""ASR commands: `podbrief transcribe FILE` and `podbrief bench transcribe --audio PATH... --device cpu|cuda --json`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.errors import PipelineError


def _bench_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The `bench` group is shared by several command modules: reuse it if another module made it first."""
    existing = subparsers.choices.get("bench")
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    bench = existing or subparsers.add_parser("bench", help="benchmarks (print one JSON object)")
    return bench.add_subparsers(dest="bench_command", required=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("transcribe", help="transcribe an audio file and print its segments")
    p.add_argument("file", type=Path)
    p.add_argument("--engine", default=None, help="auto | faster-whisper | openai-whisper (default: settings)")
    p.add_argument("--model", default=None, help="model name or path (default: settings.asr_model)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: settings.asr_device)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--words", action="store_true", help="word timestamps too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_transcribe)

    from app.asr.bench import add_arguments

    p = _bench_subparsers(subparsers).add_parser(
        "transcribe", help="time Whisper engines against openai-whisper transcribe() on the same audio"
    )
    add_arguments(p)
    p.set_defaults(handler=cmd_bench)


def _ts(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h:d}:{m:02d}:{s:05.2f}"


def cmd_transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.asr import transcribe_audio
    from app.asr.audio import load_audio, probe_duration
    from app.asr.select import get_engine
    from app.config import get_settings

    try:
        total = probe_duration(args.file)
        audio = load_audio(args.file, max_seconds=get_settings().asr_max_audio_seconds)
        engine = get_engine(engine=args.engine, model=args.model, device=args.device, batch_size=args.batch_size)
    except (PipelineError, ValueError) as exc:
        print(f"error: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    bar = tqdm(
        total=round(total or audio.size / 16000, 1),
        unit="s",
        unit_scale=False,
        desc=f"{engine.name}:{engine.model_name}",
        disable=args.no_progress,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio s [{elapsed}<{remaining}]",
    )

    def progress(done: float) -> None:
        bar.update(max(0.0, min(done, bar.total) - bar.n))

    transcript = transcribe_audio(audio, engine=engine, word_timestamps=args.words, progress=progress)
    bar.update(bar.total - bar.n)
    bar.close()
    for seg in transcript.segments:
        print(f"[{_ts(seg.start)} -> {_ts(seg.end)}] {seg.text}")
        if args.words:
            print("    " + " ".join(f"{w.word.strip()}@{w.start:.2f}" for w in seg.words))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from app.asr.bench import run_from_args

    try:
        return run_from_args(args)
    except (PipelineError, ValueError) as exc:
        print(f"error: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
