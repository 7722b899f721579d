"""Which encoder feeds CTranslate2 on a CPU (app.asr.cpu_encoder): chosen by the CPU's flags, close to float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.asr import cpu_encoder
from app.asr.audio import load_audio
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.hygiene import clean_segments
from app.asr.weights import openai_checkpoint
from app.asr.wer import corpus_wer, find_reference

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = ["jfk.mp3", "sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sha2 bf16\n")
    assert {"avx512_vnni", "amx_bf16"} <= cpu_encoder.cpu_flags(x86)
    assert "asimd" in cpu_encoder.cpu_flags(arm)
    assert cpu_encoder.cpu_flags(tmp_path / "missing") == set()


def test_auto_takes_the_native_encoder_where_its_kernels_run_and_falls_back_by_matrix_unit() -> None:
    amx = {"avx512f", "avx512bw", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8"}
    zen4 = {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
    assert cpu_encoder.auto_choice(amx) == cpu_encoder.auto_choice(zen4) == "native"
    # Without the native library: torch bf16 where AMX does its matrix products, else ONNX Runtime's int8.
    assert cpu_encoder.fallback_choice(amx) == "torch-bf16"
    assert cpu_encoder.fallback_choice(zen4) == "onnx"
    # AVX2 CPUs (Zen 3): the native AVX2 kernels, which need FMA and F16C too; the rest: ONNX Runtime's int8.
    assert cpu_encoder.auto_choice({"avx2", "fma", "f16c"}) == "native"
    assert cpu_encoder.auto_choice({"avx2", "fma"}) == "onnx"
    assert cpu_encoder.auto_choice(set()) == "onnx"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"amx_bf16"}, "torch-bf16"),
        ({"avx512bw", "avx512_vnni"}, "native-int8"),
        ({"avx2", "fma", "f16c"}, "native-int8"),
        ({"avx2"}, "onnx-int8"),
    ],
)
def test_the_engine_loads_what_auto_chooses(
    whisper_cache: Path, monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str
) -> None:
    from app.asr.native import library

    if expected == "native-int8" and library.missing() is not None:
        pytest.skip(f"native library can't run here: {library.missing()}")
    monkeypatch.setattr(cpu_encoder, "cpu_flags", lambda: flags)
    engine = FasterWhisperEngine("tiny.en", encoder="auto", cache_dir=whisper_cache)
    engine._load()
    assert engine.encoder_used == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx512bw", "avx512_vnni"}, "onnx-int8"), ({"avx512bw", "avx512_vnni", "amx_bf16"}, "torch-bf16")],
)
def test_auto_falls_back_where_the_native_library_cannot_be_built(
    whisper_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    flags: set[str],
    expected: str,
) -> None:
    from app.asr.native import library

    checkpoint = Path(openai_checkpoint("tiny.en", whisper_cache))
    monkeypatch.setattr(cpu_encoder, "cpu_flags", lambda: flags)
    monkeypatch.setattr(library, "missing", lambda *a, **k: "no C++ compiler (g++) on PATH")
    _, name = cpu_encoder.load("auto", checkpoint, whisper_cache, threads=2)
    assert name == expected and "native Whisper encoder unavailable (no C++ compiler" in caplog.text
    with pytest.raises(library.Unavailable, match="no C\\+\\+ compiler"):  # asked for by name: an error
        cpu_encoder.load("native", checkpoint, whisper_cache, threads=2)


def test_an_explicit_encoder_that_cannot_load_is_an_error_not_a_silent_fallback() -> None:
    engine = FasterWhisperEngine("tiny.en", encoder="torch-bf16", cache_dir=None)
    with pytest.raises(RuntimeError, match="no cache folder"):
        engine._load()


@pytest.mark.slow
def test_bf16_encoder_is_close_to_float32_and_gives_the_words(whisper_cache: Path) -> None:
    import torch
    import whisper

    checkpoint = Path(openai_checkpoint("tiny.en", whisper_cache))
    model = whisper.load_model(str(checkpoint), device="cpu").float()
    audio = whisper.pad_or_trim(load_audio(SPEECH / "jfk.mp3"))
    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio))[None]
    with torch.no_grad():
        ref = model.encoder(mel).numpy()
    got = cpu_encoder.TorchBf16Encoder(checkpoint)(mel.numpy())
    assert got.dtype == np.float32 and got.shape == ref.shape == (1, 1500, model.dims.n_audio_state)
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert float(cos.mean()) > 0.995  # bf16 matrix products, float32 norms and residuals: 0.9999 measured

    engine = FasterWhisperEngine("tiny.en", batch_size=4, encoder="torch-bf16", cache_dir=whisper_cache)
    pairs = []
    for name in CLIPS:
        reference = find_reference(SPEECH / name)
        assert reference
        text = " ".join(s.text for s in clean_segments(engine.transcribe(load_audio(SPEECH / name))))
        pairs.append((reference, text))
    assert engine.encoder_used == "torch-bf16"
    assert corpus_wer(pairs) <= 0.12
