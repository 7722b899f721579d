"""Word error rate and time of the CPU engine per decoder, beam size and encoder, on the dev episodes and the real
clips.

Not part of the service. `podbrief bench transcribe` answers "how fast against the baseline"; this answers the
question behind the engine's beam default: what each beam size buys in words on long, realistic audio (the 8
dev episodes, reference = their segment texts in ../shared/eval/dev.json) next to the bench's 7 short clips,
and what it costs, with either decoder. One line of JSON per configuration:

    .venv/bin/python scripts/asr_beam_sweep.py native:2 native:3 ctranslate2:2 ctranslate2:3
    .venv/bin/python scripts/asr_beam_sweep.py native:3:onnx native:3:native   # the encoder too (default auto)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.asr.audio import load_audio
from app.asr.bench import _default_cache_dir, load_clips
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.hygiene import clean_segments
from app.asr.wer import corpus_wer


def transcribe(engine: FasterWhisperEngine, audio: np.ndarray) -> str:
    return " ".join(s.text for s in clean_segments(engine.transcribe(audio)))


SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument(
        "configs",
        nargs="+",
        help="DECODER:BEAM[:ENCODER], e.g. native:3 or native:3:onnx (encoder: app.asr.cpu_encoder)",
    )
    p.add_argument("--shared", type=Path, default=SHARED)
    args = p.parse_args()

    dev = json.loads((args.shared / "eval" / "dev.json").read_text())["episodes"]
    episodes = [(load_audio(args.shared / "eval" / "audio" / f"{e['id']}.mp3"), e) for e in dev]
    references = [" ".join(s["text"] for s in e["segments"]) for _, e in episodes]
    speech = args.shared / "data" / "speech"
    librivox = sorted(speech.glob("pocketsphinx_librivox/*.wav"))
    clips = load_clips(
        [*librivox, speech / "jfk_whispercpp" / "jfk.mp3", speech / "pyannote_2speaker_call" / "sample.wav"]
    )
    for config in args.configs:
        decoder, beam, *rest = config.split(":")
        engine = FasterWhisperEngine(
            "tiny.en",
            decoder=decoder,
            beam_size=int(beam),
            encoder=rest[0] if rest else "auto",
            cache_dir=_default_cache_dir(),
        )
        engine.warm_up()

        start = time.perf_counter()
        dev_texts = [transcribe(engine, audio) for audio, _ in episodes]
        dev_seconds = time.perf_counter() - start
        start = time.perf_counter()
        clip_texts = [transcribe(engine, c.audio) for c in clips]
        clip_seconds = time.perf_counter() - start
        pairs = [(c.reference or "", t) for c, t in zip(clips, clip_texts, strict=True)]
        row = {
            "decoder": engine.decoder_used,
            "encoder": engine.encoder_used,
            "beam_size": int(beam),
            "dev_episodes_wer": round(corpus_wer(list(zip(references, dev_texts, strict=True))), 4),
            "dev_episodes_seconds": round(dev_seconds, 1),
            "clips_wer": round(corpus_wer(pairs), 4),
            "clips_seconds": round(clip_seconds, 2),
            "per_clip_wer": {c.name: round(corpus_wer([pair]), 4) for c, pair in zip(clips, pairs, strict=True)},
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
