"""The encoder sees a window's speech plus a margin, not always 30 s (app.asr.encoder_input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.asr import encoder_input
from app.asr.audio import SAMPLE_RATE, load_audio
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.hygiene import clean_segments
from app.asr.native import library as native_library
from app.asr.weights import openai_checkpoint
from app.asr.wer import corpus_wer, edit_distance, find_reference, normalize

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = ["jfk.mp3", "sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]


def _mel(audio: np.ndarray) -> np.ndarray:
    """openai-whisper's log-mel of audio padded with silence to 30 s (what the engines feed the encoder)."""
    import torch
    import whisper

    return whisper.log_mel_spectrogram(torch.from_numpy(whisper.pad_or_trim(audio))).numpy()[None]


def test_speech_end_is_where_the_silence_padding_starts() -> None:
    jfk = load_audio(SPEECH / "jfk.mp3")  # 11.0 s, speech up to the end
    mel = _mel(jfk)
    end = int(encoder_input.speech_end(mel)[0])
    assert abs(end - jfk.size / SAMPLE_RATE * 100) <= 3  # 100 frames a second
    # 11 s of speech + 5 s of margin = 1,600 frames, rounded up to a 500-frame bucket; + 8 s: 1,900.
    assert encoder_input.frames_to_encode(mel) == 2000
    assert encoder_input.frames_to_encode(mel, margin=800) == 2000
    assert encoder_input.frames_to_encode(mel[:, :, :1500], margin=800) == 1500  # never past the input


def test_a_batch_takes_its_longest_row_and_full_windows_are_never_cut() -> None:
    rng = np.random.default_rng(0)
    short = _mel((rng.standard_normal(3 * SAMPLE_RATE) * 0.1).astype(np.float32))
    full = _mel((rng.standard_normal(30 * SAMPLE_RATE) * 0.1).astype(np.float32))
    assert encoder_input.frames_to_encode(short) == encoder_input.MIN_FRAMES
    assert encoder_input.frames_to_encode(np.concatenate([short, full])) == 3000
    # 26 s of speech: 26 + 5 s is past 30 s, so the whole window.
    long = _mel((rng.standard_normal(26 * SAMPLE_RATE) * 0.1).astype(np.float32))
    assert encoder_input.frames_to_encode(long) == 3000
    # Digital silence throughout (nothing above the floor) and an empty batch: the shortest input / no cut.
    assert encoder_input.frames_to_encode(_mel(np.zeros(5 * SAMPLE_RATE, dtype=np.float32))) == 1000
    assert encoder_input.frames_to_encode(np.zeros((0, 80, 3000), dtype=np.float32)) == 3000


def test_mel_padded_with_zeros_has_no_silence_tail_and_is_not_cut() -> None:
    """faster-whisper's sequential loop pads log-mel with zeros, not silence: nothing there to recognise."""
    mel = _mel(load_audio(SPEECH / "jfk.mp3"))
    mel[:, :, 1200:] = 0.0
    assert encoder_input.frames_to_encode(mel) == 3000


def test_every_length_it_returns_is_one_warm_up_runs() -> None:
    assert encoder_input.lengths() == [1000, 1500, 2000, 2500, 3000]
    rng = np.random.default_rng(1)
    for end in rng.integers(0, 3001, size=50):
        mel = np.zeros((1, 80, 3000), dtype=np.float32)
        mel[0, 0, :end] = 1.0
        frames = encoder_input.frames_to_encode(mel)
        assert frames in encoder_input.lengths()
        assert frames >= min(3000, int(end) + encoder_input.MARGIN_FRAMES)


@pytest.mark.slow
def test_any_length_forward_is_whispers_on_30_s_and_shorter_otherwise(whisper_cache: Path) -> None:
    import torch
    import whisper

    model = whisper.load_model(str(openai_checkpoint("tiny.en", whisper_cache)), device="cpu").float()
    mel = torch.from_numpy(_mel(load_audio(SPEECH / "jfk.mp3")))
    with torch.no_grad():
        assert torch.equal(encoder_input.encode_any_length(model.encoder, mel), model.encoder(mel))
        short = encoder_input.encode_any_length(model.encoder, mel[:, :, :2000])
    assert short.shape == (1, 1000, model.dims.n_audio_state)


class _Spy:
    """Wraps the engine's encoder and records the input shapes it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trim_margin = inner.trim_margin
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        self.shapes.append(mel.shape)
        out: np.ndarray = self.inner(mel)
        return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "encoder",
    [
        "torch-bf16",
        "onnx",
        pytest.param("native", marks=pytest.mark.skipif(native_library.missing() is not None, reason="no native")),
    ],
)
def test_short_clips_encode_fewer_frames_and_keep_their_words(whisper_cache: Path, encoder: str) -> None:
    engines = {
        trim: FasterWhisperEngine("tiny.en", encoder=encoder, trim_encoder_input=trim, cache_dir=whisper_cache)
        for trim in (True, False)
    }
    spies = {}
    for trim, engine in engines.items():
        engine._load()
        swap = engine._encoder_swap
        assert swap is not None
        spies[trim] = swap._encoder = _Spy(swap._encoder)
    pairs: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for name in CLIPS:
        audio = load_audio(SPEECH / name)
        reference = find_reference(SPEECH / name)
        assert reference
        for trim, engine in engines.items():
            text = " ".join(s.text for s in clean_segments(engine.transcribe(audio)))
            pairs[trim].append((reference, text))
    assert {s[-1] for s in spies[False].shapes} == {3000}
    assert max(s[-1] for s in spies[True].shapes) <= 2000  # clips of 3-11 s, + 5 s (bf16) or 8 s (int8)
    assert corpus_wer(pairs[True]) <= 0.12
    # At most a phrase apart: 3 word edits of 57 (seen: 3, two of them "ill disposed" heard as "old-sposed", which
    # CTranslate2's decoder also says with either input).
    trimmed, full = (sum(edit_distance(normalize(r), normalize(h)) for r, h in pairs[t]) for t in (True, False))
    assert trimmed <= full + 3


@pytest.mark.slow
def test_word_timestamps_stay_inside_a_trimmed_window(whisper_cache: Path) -> None:
    engine = FasterWhisperEngine("tiny.en", encoder="torch-bf16", cache_dir=whisper_cache)
    audio = load_audio(SPEECH / "jfk.mp3")
    words = [w for s in engine.transcribe(audio, word_timestamps=True) for w in s.words]
    assert len(words) >= 15
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= audio.size / SAMPLE_RATE + 0.5 for w in words)
    assert "country" in " ".join(w.word for w in words).lower()
