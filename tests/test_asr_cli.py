"""`podbrief transcribe FILE` and `podbrief bench transcribe ... --json` through the real CLI parser."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.asr import select
from app.asr.native import library
from app.cli import main

SPEECH = Path(__file__).parent / "data" / "speech"
CLIP = SPEECH / "sense_and_sensibility_01_austen_64kb-0930.wav"  # 3.3 s


def test_engine_choice_follows_device_and_settings(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import reset_settings

    monkeypatch.setattr(select, "cuda_available", lambda: False)
    spec = select.resolve()
    assert spec.engine == "faster-whisper" and spec.batch_size == select.CPU_BATCH_SIZE
    monkeypatch.setattr(select, "cuda_available", lambda: True)
    spec = select.resolve()
    assert spec.engine == "openai-whisper-batched" and spec.device == "cuda"
    assert spec.batch_size == select.GPU_BATCH_SIZE > select.CPU_BATCH_SIZE  # rows are nearly free on a GPU
    monkeypatch.setenv("PODBRIEF_ASR_ENGINE", "faster-whisper")
    monkeypatch.setenv("PODBRIEF_ASR_BATCH_SIZE", "4")
    reset_settings()
    spec = select.resolve()
    assert spec.engine == "faster-whisper" and spec.batch_size == 4 and spec.compute_type == "int8_float16"
    monkeypatch.setenv("PODBRIEF_ASR_ENGINE", "openai-whisper")
    monkeypatch.setenv("PODBRIEF_ASR_DEVICE", "cpu")
    reset_settings()
    spec = select.resolve()
    assert spec.engine == "openai-whisper-batched" and spec.device == "cpu"
    from app.config import get_settings

    assert spec.cache_dir == str(get_settings().models_dir / "openai-whisper")  # converted once, shared
    with pytest.raises(ValueError):
        select.resolve(engine="whisper.cpp")


@pytest.mark.slow
def test_transcribe_command_prints_timed_segments(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(CLIP), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[0:00:0") and "-> 0:00:0" in out
    assert "amiable himself" in out


@pytest.mark.slow
def test_bench_transcribe_prints_one_json_object(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench", "transcribe", "--audio", str(CLIP), "--device", "cpu", "--engines", "faster-whisper", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["baseline"] == "openai-whisper"
    assert set(report["engines"]) == {"openai-whisper", "faster-whisper"}  # the baseline always runs
    assert report["audio_seconds"] == pytest.approx(3.29, abs=0.05)
    for entry in report["engines"].values():
        assert entry["wall_seconds"] > 0 and entry["rtf_x"] > 0
        assert 0.0 <= entry["wer"] <= 0.2
    assert report["speedup_vs_baseline"]["openai-whisper"] == 1.0
    assert report["speedup_vs_baseline"]["faster-whisper"] > 0
    # Which machine, and which of the native library's kernels ran: ratios differ from one CPU kind to the next.
    assert report["machine"]["cores"] == os.cpu_count() and report["machine"]["cpu"]
    if library.missing() is None:
        assert "avx2" in report["machine"]["isa"]
        kernels = ("avx2", "avx2+avx-vnni", "avx512-vnni", "avx512-vnni+amx")
        assert report["engines"]["faster-whisper"]["kernels"] in kernels
    assert "kernels" not in report["engines"]["openai-whisper"]


def test_the_bench_names_the_first_processor_and_its_instruction_sets(tmp_path: Path) -> None:
    from app.asr.bench import machine

    block = (
        "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
        "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma f16c bmi2\n\n"
    )
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1).replace("7B13", "other"))
    got = machine(cpuinfo)
    assert got["cpu"] == "AMD EPYC 7B13" and (got["family"], got["model"]) == (25, 1)
    assert got["isa"] == ["avx2", "fma", "f16c"]  # no AVX-512: a Zen 3
    missing = machine(tmp_path / "absent")  # not Linux: still a report
    assert missing["family"] is None and missing["isa"] == [] and missing["cores"] == os.cpu_count()


def test_duration_cap_refused_by_the_command(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.config import reset_settings

    monkeypatch.setenv("PODBRIEF_ASR_MAX_AUDIO_SECONDS", "2")
    reset_settings()
    assert main(["transcribe", str(CLIP), "--no-progress"]) == 1
    assert "over the 2 s limit" in capsys.readouterr().err


def test_bench_repeat_budget_runs_a_slow_engine_once() -> None:
    import time

    import numpy as np

    from app.asr.bench import Clip, run_engine

    class Slow:
        device = "cpu"
        runs = 0

        def warm_up(self) -> None:
            pass

        def transcribe(self, audio: np.ndarray) -> list[object]:
            Slow.runs += 1
            time.sleep(0.05)
            return []

    clip = [Clip(name="x", audio=np.zeros(16000, dtype=np.float32), reference=None)]
    run_engine(Slow(), clip, repeat=3, budget=0.01)  # type: ignore[arg-type]
    assert Slow.runs == 1
    run_engine(Slow(), clip, repeat=3)  # type: ignore[arg-type]
    assert Slow.runs == 4


def _cuda_devices(monkeypatch: pytest.MonkeyPatch, torch_sees: int, ctranslate2_sees: int) -> None:
    """What each runtime reports (this machine has no GPU; a GPU machine must not change the answers)."""
    import ctranslate2
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_sees > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: torch_sees)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: ctranslate2_sees)


def test_a_device_is_checked_against_what_each_engines_runtime_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_devices(monkeypatch, torch_sees=0, ctranslate2_sees=1)
    select.check_device("faster-whisper", "cuda")
    select.check_device("faster-whisper", "cuda:0")
    select.check_device("openai-whisper-batched", "cpu")
    with pytest.raises(ValueError, match=r"'cuda:1': CTranslate2 \(faster-whisper\) sees 1 CUDA device here"):
        select.check_device("faster-whisper", "cuda:1")
    with pytest.raises(ValueError, match=r"'cuda': torch \(openai-whisper-batched\) sees no CUDA device here"):
        select.check_device("openai-whisper-batched", "cuda")
    for bad in ("gpu", "cuda:x", "cuda:", "auto"):  # "auto" is resolved to cpu or cuda before this
        with pytest.raises(ValueError, match="unknown device"):
            select.check_device("faster-whisper", bad)


def test_asking_for_cuda_where_there_is_none_is_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cuda_devices(monkeypatch, torch_sees=0, ctranslate2_sees=0)
    assert main(["transcribe", str(CLIP), "--device", "cuda", "--no-progress"]) == 1
    assert "error: device 'cuda': torch (openai-whisper-batched) sees no CUDA device here" in capsys.readouterr().err
    # The bench fails before it loads anything: no baseline, no ratio, and no JSON that looks like a result.
    assert main(["bench", "transcribe", "--audio", str(CLIP), "--device", "cuda", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error: device 'cuda': torch (openai-whisper-sequential) sees no CUDA device" in err
