"""Word error rate, and finding a reference transcript beside an audio file (NAME.txt, NAME.stm, transcripts.tsv)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    try:
        # Whisper's own English normaliser: "Mr." == "mister", "10" == "ten", British/American spellings.
        from whisper.normalizers import EnglishTextNormalizer

        normalizer: Callable[[str], str] = EnglishTextNormalizer()
        return normalizer
    except ImportError:  # pragma: no cover - openai-whisper is a dependency; keep WER usable without it
        return lambda s: re.sub(r"[^\w' ]+", " ", s.lower())


def normalize(text: str) -> list[str]:
    return _normalizer()(text).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate in [0, inf) after normalisation; 0.0 for two empty texts."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def corpus_wer(pairs: Sequence[tuple[str, str]]) -> float:
    """Errors over all files / reference words over all files (not a mean of per-file rates)."""
    errors = words = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalize(reference), normalize(hypothesis)
        errors += edit_distance(ref, hyp)
        words += len(ref)
    return errors / words if words else 0.0


def _read_stm(path: Path) -> str:
    rows: list[tuple[float, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) >= 6 and not line.startswith(";;"):
            rows.append((float(parts[3]), parts[5]))
    return " ".join(text for _, text in sorted(rows))


def find_reference(audio: Path) -> str | None:
    """The reference transcript that sits beside `audio`, if any."""
    txt, stm, tsv = audio.with_suffix(".txt"), audio.with_suffix(".stm"), audio.parent / "transcripts.tsv"
    if txt.is_file():
        return txt.read_text(encoding="utf-8").strip()
    if stm.is_file():
        return _read_stm(stm)
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8").splitlines():
            key, _, text = line.partition("\t")
            if key.strip() == audio.stem:
                return text.strip()
    return None
