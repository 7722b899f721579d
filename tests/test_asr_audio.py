"""Audio in through PyAV (no ffmpeg binary): formats, sample rates, the duration cap."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from app.asr.audio import SAMPLE_RATE, load_audio, probe_duration
from app.asr.chunking import energy_regions, fixed_windows, pack_windows
from app.errors import PermanentError

SPEECH = Path(__file__).parent / "data" / "speech"


def _encode(path: Path, codec: str, rate: int, seconds: float, layout: str = "stereo") -> None:
    """A tone encoded with PyAV's bundled libraries (what a feed's enclosure would be)."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.format.name
        planar = fmt.endswith("p")
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, tone.size, frame_size):
            chunk = tone[i : i + frame_size]
            data = np.tile(chunk, (channels, 1)) if planar else np.repeat(chunk, channels)[None, :]
            if fmt.startswith("s16"):
                data = (data * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                data = (data * 2**31 * 0.99).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize(
    ("name", "codec", "rate"),
    [
        ("a.ogg", "libopus", 48000),
        ("a.flac", "flac", 44100),
        ("a.m4a", "aac", 48000),
        ("a.wav", "pcm_s16le", 22050),
        ("a.mp3", "libmp3lame", 44100),
    ],
)
def test_any_container_and_rate_to_16k_mono(tmp_path: Path, name: str, codec: str, rate: int) -> None:
    path = tmp_path / name
    try:
        _encode(path, codec, rate, 2.0)
    except (av.error.FFmpegError, ValueError) as exc:  # pragma: no cover - depends on PyAV's build
        pytest.skip(f"PyAV build can't encode {codec}: {exc}")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / SAMPLE_RATE - 2.0) < 0.15
    assert 0.1 < float(np.abs(audio).max()) <= 1.0
    duration = probe_duration(path)
    assert duration is not None and abs(duration - 2.0) < 0.15


def test_real_mp3_decodes() -> None:
    audio = load_audio(SPEECH / "jfk.mp3")
    assert abs(audio.size / SAMPLE_RATE - 11.0) < 0.1


def test_over_the_cap_refused_before_decoding() -> None:
    with pytest.raises(PermanentError, match="over the 5 s limit"):
        load_audio(SPEECH / "jfk.mp3", max_seconds=5)


def test_missing_and_garbage_files_are_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError):
        load_audio(tmp_path / "nope.mp3")
    bad = tmp_path / "page.mp3"
    bad.write_bytes(b"<html><body>Not audio</body></html>" * 10)
    with pytest.raises(PermanentError):
        load_audio(bad)


def test_energy_vad_finds_speech_bursts_and_windows_pack_under_30s() -> None:
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(SAMPLE_RATE * 80) * 0.001).astype(np.float32)  # quiet room noise
    bursts = [(2.0, 12.0), (14.0, 26.0), (40.0, 55.0)]
    for s, e in bursts:
        n = int((e - s) * SAMPLE_RATE)
        audio[int(s * SAMPLE_RATE) : int(s * SAMPLE_RATE) + n] += (rng.standard_normal(n) * 0.2).astype(np.float32)
    regions = energy_regions(audio)
    assert len(regions) == 3
    for (s, e), (rs, re_) in zip(bursts, regions, strict=True):
        assert abs(rs - s) < 0.4 and abs(re_ - e) < 0.4
    windows = pack_windows(regions)
    assert len(windows) == 2 and all(e - s <= 30.0 for s, e in windows)
    assert fixed_windows(65.0) == [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]


def test_wav_reader_used_where_pyav_is_missing(tmp_path: Path) -> None:
    """The bare GPU machine has no PyAV: 16 kHz WAV is read with the standard library."""
    import wave

    from app.asr import audio as audio_module

    path = tmp_path / "a.wav"
    samples = (np.sin(np.arange(SAMPLE_RATE) / 10) * 10000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.tobytes())
    out = audio_module._load_wav(path, None)
    np.testing.assert_allclose(out, samples / 32768.0, atol=1e-6)
    assert audio_module._wav_duration(path) == 1.0
    with pytest.raises(PermanentError):
        audio_module._load_wav(path, 0.5)


def test_speech_runs_match_a_plain_loop() -> None:
    """The vectorised run finder behind energy_regions() (an hour of audio in ~0.07 s) equals the obvious loop."""
    from app.asr.chunking import _runs

    rng = np.random.default_rng(7)
    for _ in range(50):
        indices = np.flatnonzero(rng.random(int(rng.integers(0, 400))) < rng.uniform(0.05, 0.9))
        gap = int(rng.integers(1, 20))
        expected: list[list[int]] = []
        for i in indices:
            if expected and i - expected[-1][1] <= gap:
                expected[-1][1] = int(i)
            else:
                expected.append([int(i), int(i)])
        assert _runs(indices, gap) == [tuple(r) for r in expected]
