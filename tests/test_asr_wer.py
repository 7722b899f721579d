"""WER and finding the reference beside an audio file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.asr.wer import corpus_wer, find_reference, wer


def test_wer_normalises_case_punctuation_and_titles() -> None:
    assert wer("and mister john dashwood had then leisure", "And Mr. John Dashwood had then leisure.") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)
    assert wer("", "") == 0.0


def test_corpus_wer_weights_by_words() -> None:
    assert corpus_wer([("alpha beta gamma delta", "alpha beta gamma delta"), ("epsilon", "zeta")]) == pytest.approx(0.2)


def test_references_txt_stm_tsv(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello there\n")
    (tmp_path / "b.stm").write_text("b 1 Bob 2.0 3.0 world\nb 1 Ann 0.5 1.0 hello\n")
    (tmp_path / "transcripts.tsv").write_text("c\tgood morning\nd\tgood night\n")
    assert find_reference(tmp_path / "a.wav") == "hello there"
    assert find_reference(tmp_path / "b.wav") == "hello world"
    assert find_reference(tmp_path / "d.wav") == "good night"
    assert find_reference(tmp_path / "zzz.wav") is None
