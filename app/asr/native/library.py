"""Build the native Whisper library (decoder.cpp, encoder.cpp, their kernels) for this CPU with the system
compiler, once, and load it.

Compiled at first use rather than shipped: -march=native is what makes the int8 kernels fast, and a wheel built
for one CPU would crash (illegal instruction) on another. The library is cached under the model cache, keyed by
the sources, the compiler command and the CPU's flags, so a change to any of them builds a new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from app.asr.cpu_encoder import cpu_fields, cpu_flags

FOLDER = Path(__file__).parent
SOURCES = ("kernels.cpp", "decoder.cpp", "encoder.cpp")
HEADERS = ("kernels.h",)
# AVX2 + FMA for the int8 products and the attention, F16C for the float16 audio keys and values; where the CPU
# also has AVX-512 VNNI, -march=native builds the vpdpbusd kernels instead (kernels.h; `kernels()` says which), and
# where it has AVX-VNNI, the AVX2 kernel multiplies with its 256-bit vpdpbusd (`avx_vnni()`).
REQUIRED_FLAGS = ("avx2", "fma", "f16c")
COMPILE = ["-O3", "-march=native", "-ffast-math", "-shared", "-fPIC"]
LINK = ["-lmvec"]  # glibc's vector maths: expf/erff vectorised under -ffast-math
# A library no process has loaded for this long is removed (older sources pile up with every upgrade). Not at
# once: a models folder shared by machines with different CPUs holds one library per CPU, each in use.
STALE_AFTER_S = 30 * 86400

_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL] = {}


class Unavailable(RuntimeError):
    """This machine can't run the native library (the reason is the message)."""


def missing(flags: set[str] | None = None, compiler: str | None = "g++") -> str | None:
    """Why the native library can't run here, or None when it can."""
    flags = cpu_flags() if flags is None else flags
    absent = [f for f in REQUIRED_FLAGS if f not in flags]
    if absent:
        return f"the CPU lacks {', '.join(absent)}"
    if compiler is None or shutil.which(compiler) is None:
        return "no C++ compiler (g++) on PATH"
    return None


def _key(compiler: str, flags: set[str], extra: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update((FOLDER / name).read_bytes())
    h.update(" ".join([compiler, *COMPILE, *extra, *LINK]).encode())
    for path in extra:  # a header named with -include: its text, not only its name
        if Path(path).is_file():
            h.update(Path(path).read_bytes())
    h.update(" ".join(sorted(flags)).encode())
    # -march=native also goes by the CPU's model (kernels.h picks the AVX2 kernel's widening for AMD Zen 1), which
    # two CPUs with the same flags may not share: a models folder shared between them holds a library for each.
    fields = cpu_fields()
    h.update(" ".join(fields.get(name, "") for name in ("vendor_id", "cpu family", "model")).encode())
    return h.hexdigest()[:16]


def load(cache_dir: Path, compiler: str = "g++", extra: Sequence[str] = ()) -> ctypes.CDLL:
    """The library for this CPU, built into cache_dir/native/ if not there yet. Raises Unavailable.
    `extra`: more compiler options, for the tests that build the other kernel family (-mno-avx512f on an AVX-512
    CPU gives the AVX2 kernels)."""
    flags = cpu_flags()
    reason = missing(flags, compiler)
    if reason is not None:
        raise Unavailable(reason)
    target = cache_dir / "native" / f"whisper-{_key(compiler, flags, extra)}.so"
    with _lock:
        if target in _loaded:
            return _loaded[target]
        if not target.is_file():
            _build(compiler, target, extra)
        with contextlib.suppress(OSError):  # a read-only models folder is fine: nothing is pruned there either
            os.utime(target)  # "in use": what prune() goes by
        prune(target.parent, keep=target)
        prune(cache_dir / LEGACY[0], keep=target, pattern=LEGACY[1])
        lib = ctypes.CDLL(str(target))
        _declare(lib)
        _loaded[target] = lib
        return lib


def describe(lib: ctypes.CDLL) -> str:
    """The int8 kernels a loaded library runs, as the bench reports them: "avx512-vnni" (+ "+amx" where products
    run on AMX tiles) or "avx2" (+ "+avx-vnni" where it multiplies with AVX-VNNI's vpdpbusd)."""
    name = str(lib.kernels().decode())
    if lib.avx_vnni():
        name += "+avx-vnni"
    if lib.set_amx(-1):
        name += "+amx"
    return name


def _build(compiler: str, target: Path, extra: Sequence[str]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed: another process loading it never sees half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [compiler, *COMPILE, *extra, "-o", tmp, *(str(FOLDER / name) for name in SOURCES), *LINK],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise Unavailable(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Where libraries were built before the encoder joined the decoder (2026-12-06): pruned by the same rule.
LEGACY = ("native-decoder", "decoder-*.so")


def prune(folder: Path, keep: Path, now: float | None = None, pattern: str = "whisper-*.so") -> list[Path]:
    """Remove the libraries (`pattern`) in `folder` other than `keep` that nobody loaded for STALE_AFTER_S;
    returns them. (A process that still has one loaded keeps its mapping: unlinking a loaded library is safe on
    Linux.)"""
    now = time.time() if now is None else now
    removed = []
    for old in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if old != keep and now - old.stat().st_mtime > STALE_AFTER_S:
                old.unlink()
                removed.append(old)
    return removed


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types: without them ctypes passes pointers as C ints (truncated on 64-bit)."""
    p, i, z = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.kernels.argtypes = []
    lib.kernels.restype = ctypes.c_char_p
    lib.widen_by_shifts.argtypes = []
    lib.widen_by_shifts.restype = i
    lib.avx_vnni.argtypes = []
    lib.avx_vnni.restype = i
    lib.set_amx.argtypes = [i]
    lib.set_amx.restype = i
    lib.create_model.argtypes = [i, i, i, i, i, p, p, p, p]
    lib.create_model.restype = p
    lib.free_model.argtypes = [p]
    lib.free_model.restype = None
    lib.pack.argtypes = [p, i, i, p, p]
    lib.pack.restype = None
    lib.product.argtypes = [p, i, i, p, i, p]
    lib.product.restype = None
    lib.product_of.argtypes = [p, i, i, p, i, p, i]
    lib.product_of.restype = None
    lib.product_seven_bit.argtypes = [p, i, i, p, i, p]
    lib.product_seven_bit.restype = None
    lib.set_linear.argtypes = [p, i, i, p, p, p, p, i, i]
    lib.set_linear.restype = None
    lib.set_layer_norms.argtypes = [p, i, p, p, p, p, p, p]
    lib.set_layer_norms.restype = None
    lib.self_slot_size.argtypes = [p]
    lib.self_slot_size.restype = z
    lib.cross_slot_size.argtypes = [p, i]
    lib.cross_slot_size.restype = z
    lib.cross_kv.argtypes = [p, p, i, p, i]
    lib.cross_kv.restype = None
    lib.copy_slot.argtypes = [p, p, i, i, i]
    lib.copy_slot.restype = None
    lib.step.argtypes = [p, p, i, i, p, p, i, i, p, p, p, i]
    lib.step.restype = None
    lib.choose.argtypes = [p, i, i, p, i, p, i, p, p, p, p, i, i, p, p, i]
    lib.choose.restype = None
    lib.create_encoder.argtypes = [i, i, i, i, i, p, p, p]
    lib.create_encoder.restype = p
    lib.free_encoder.argtypes = [p]
    lib.free_encoder.restype = None
    lib.set_encoder_linear.argtypes = [p, i, i, p, p, p, p, i, i]
    lib.set_encoder_linear.restype = None
    lib.set_encoder_norms.argtypes = [p, i, p, p, p, p]
    lib.set_encoder_norms.restype = None
    lib.encode.argtypes = [p, p, i, p, i]
    lib.encode.restype = None
    lib.pack_attention_head.argtypes = [p, i, i, i, i, p, p, p, p]
    lib.pack_attention_head.restype = None
