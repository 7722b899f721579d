"""Audio in: any container/codec PyAV can read (mp3, m4a, ogg, wav ...), any sample rate, to 16 kHz mono float32.

No ffmpeg binary is needed (PyAV bundles the libraries), so openai-whisper gets numpy arrays from here rather
than shelling out. The duration is read from the container before decoding, and decoding stops at the cap
too, because some containers do not state a duration (or lie about it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import PermanentError

SAMPLE_RATE = 16000


def probe_duration(path: str | Path) -> float | None:
    """Seconds of audio as the container states it, or None when it does not say."""
    try:
        import av
    except ImportError:  # bare GPU machine: WAV only
        return _wav_duration(path)

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise PermanentError(f"no audio stream in {Path(path).name}")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return float(container.duration) / av.time_base
            return None
    except av.error.FFmpegError as exc:
        raise PermanentError(f"unreadable audio {Path(path).name}: {exc}") from exc


def _refuse(seconds: float, cap: float, name: str) -> PermanentError:
    return PermanentError(f"audio {name} is {seconds:.0f} s long, over the {cap:.0f} s limit")


def load_audio(path: str | Path, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode to 16 kHz mono float32 in [-1, 1]; PermanentError when unreadable or over max_seconds."""
    name = Path(path).name
    if not Path(path).is_file():
        raise PermanentError(f"audio file not found: {name}")
    try:
        import av
    except ImportError:  # bare GPU machine (no PyAV): 16 kHz WAV only
        return _load_wav(path, max_seconds)
    stated = probe_duration(path)
    if max_seconds is not None and stated is not None and stated > max_seconds:
        raise _refuse(stated, max_seconds, name)
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE) + SAMPLE_RATE
    chunks: list[np.ndarray] = []
    total = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    total += arr.size
                if limit is not None and total > limit:
                    raise _refuse(total / SAMPLE_RATE, float(max_seconds or 0), name)
            for out in resampler.resample(None):  # flush the resampler's buffered tail
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise PermanentError(f"unreadable audio {name}: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def load_raw_pcm16(path: str | Path) -> np.ndarray:
    """Headerless 16 kHz s16le mono (the pocketsphinx test clip)."""
    return np.fromfile(str(path), dtype="<i2").astype(np.float32) / 32768.0


def _wav_duration(path: str | Path) -> float:
    import wave

    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _load_wav(path: str | Path, max_seconds: float | None) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as w:
        seconds = w.getnframes() / w.getframerate()
        if max_seconds is not None and seconds > max_seconds:
            raise _refuse(seconds, max_seconds, Path(path).name)
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise PermanentError(f"{Path(path).name}: without PyAV only 16 kHz 16-bit WAV can be read")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return data.mean(axis=1).astype(np.float32) / 32768.0
