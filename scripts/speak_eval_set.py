"""Speak a labelled eval set with espeak-ng, so `podbrief eval briefs --audio-dir` can test it end to end.

    apt-get install espeak-ng
    .venv/bin/python scripts/speak_eval_set.py tests/data/eval/independent.json var/eval-audio
    .venv/bin/podbrief eval briefs --dataset tests/data/eval/independent.json --audio-dir var/eval-audio --json

Two voices (host en-us, guest en-gb), segments in order with 0.45 s between them, written as DIR/<episode id>.mp3
(22,050 Hz mono, PyAV's mp3 encoder). The shared dev set's audio was made the same way with espeak-ng; the audio
is not kept in the repository (~9 MB for the independent set) because it is made again in a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import av
import numpy as np

VOICES = {"host": ["-v", "en-us", "-s", "150", "-p", "45"], "guest": ["-v", "en-gb", "-s", "142", "-p", "60"]}
GAP_SECONDS = 0.45


def speak(text: str, speaker: str) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        voice = VOICES.get(speaker, VOICES["host"])
        subprocess.run(["espeak-ng", *voice, "-g", "3", "-w", f.name, text], check=True)
        with wave.open(f.name) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def write_mp3(path: Path, pcm: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp3", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def main(dataset: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for episode in json.loads(dataset.read_text())["episodes"]:
        pieces: list[np.ndarray] = []
        rate = 22050
        for segment in episode["segments"]:
            pcm, rate = speak(segment["text"], segment.get("speaker", "host"))
            pieces += [pcm, np.zeros(int(GAP_SECONDS * rate), dtype=np.int16)]
        audio = np.concatenate(pieces)
        write_mp3(out / f"{episode['id']}.mp3", audio, rate)
        print(f"{episode['id']}: {audio.size / rate:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
