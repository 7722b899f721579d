"""Compiler options for building the native library's other kernel variants, for the tests that compare them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.asr.cpu_encoder import cpu_flags


def other_widening(lib: Any) -> list[str]:
    """Options for the AVX2 kernels that widen their int16 pair sums the other way from `lib`'s (kernels.h:
    vpmaddwd by ones, or shifts as on AMD Zen 1); on an AVX-512 CPU, for the AVX2 build (-mno-avx512f) that does
    not widen as its default AVX2 build would."""
    if lib.kernels() == b"avx512-vnni":
        return ["-mno-avx512f", "-DPODBRIEF_WIDEN_BY_SHIFTS=1"]  # no AVX-512 CPU is a Zen 1
    return [f"-DPODBRIEF_WIDEN_BY_SHIFTS={1 - int(lib.widen_by_shifts())}"]


def avx2_default(lib: Any) -> list[str]:
    """Options for the AVX2 kernels as -march=native builds them on this CPU: none on an AVX2 CPU, -mno-avx512f on
    an AVX-512 one."""
    return ["-mno-avx512f"] if lib.kernels() == b"avx512-vnni" else []


def other_vnni(lib: Any) -> list[str]:
    """Options for the AVX2 kernel that multiplies the other way from this CPU's AVX2 build (kernels.h): without
    AVX-VNNI's vpdpbusd (-mno-avxvnni) where the CPU has it, else with vpdpbusd emulated in AVX2 (widening by
    vpmaddwd, which the kernel's AVX-VNNI branch takes the place of, also on a Zen 1)."""
    if "avx_vnni" in cpu_flags():
        return [*avx2_default(lib), "-mno-avxvnni"]
    return [*avx2_default(lib), "-DPODBRIEF_WIDEN_BY_SHIFTS=0", "-DPODBRIEF_AVX_VNNI_EMULATION=1"]


# The AVX-512 kernels in plain C++ (tests/avx512_emulation.h), for a CPU without AVX-512.
EMULATION = ["-include", str(Path(__file__).with_name("avx512_emulation.h"))]


def other_family(kernels: str) -> list[str]:
    """Options for the kernel family this CPU does not build (`kernels`: what it builds, "avx512-vnni" or "avx2"):
    the AVX2 kernels with -mno-avx512f on an AVX-512 CPU, the emulated AVX-512 ones on any other."""
    return ["-mno-avx512f"] if kernels == "avx512-vnni" else EMULATION


# The builds the exact-sum tests run, by name: this CPU's own, the other kernel family, AVX2 widened the other way,
# AVX2 with or without AVX-VNNI, whichever this CPU's AVX2 build is not.
FAMILIES = ["this cpu's", "the other", "avx2 widened the other way", "avx2 multiplied the other way"]


def family_build(lib: Any, family: str) -> list[str] | None:
    """Options for one of FAMILIES next to `lib` (this CPU's library): None for this CPU's own build."""
    return {
        "this cpu's": None,
        "the other": other_family(lib.kernels().decode()),
        "avx2 widened the other way": other_widening(lib),
        "avx2 multiplied the other way": other_vnni(lib),
    }[family]
