"""The embedding stage and the encoder backends, with the real bundled model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import select

from app.ml import encoder
from app.models import Episode, EpisodeStatus, Insight, Podcast
from app.pipeline import embeddings

TEXTS = [
    "Sour coffee is usually under-extracted because the water dissolved the acids but not the sugars.",
    "Grinding finer raises extraction, and most brewers aim to dissolve about twenty percent of the coffee.",
    "Magnesium ions in brewing water bind to flavour compounds and pull them out of the grounds.",
    "Volcanic eruptions can cool the planet for a year or two by lofting sulphate aerosols.",
]


@pytest.mark.slow
def test_onnx_int8_agrees_with_torch(env) -> None:
    torch_v = encoder.encode(TEXTS, backend_name="torch")
    assert torch_v.shape == (len(TEXTS), encoder.DIM)
    assert np.allclose(np.linalg.norm(torch_v, axis=1), 1.0, atol=1e-4)
    chosen = encoder._resolve("onnx-int8")
    fast = encoder.encode(TEXTS, backend_name="onnx-int8")
    if chosen == "onnx-int8":
        cos = (fast * torch_v).sum(axis=1)
        assert cos.min() > 0.9, cos
        # Same neighbourhoods: the coffee sentences are closer to each other than to the volcano one.
        sims = fast @ fast.T
        assert sims[0, 1] > sims[0, 3] and sims[2, 1] > sims[2, 3]
    assert encoder.from_blob(encoder.to_blob(fast[0])).tolist() == fast[0].tolist()


@pytest.mark.slow
def test_embed_episode_stores_vectors_once(session) -> None:
    podcast = Podcast(feed_url="https://example.test/e.xml", title="E")
    ep = Episode(podcast=podcast, guid="e", status=EpisodeStatus.EXTRACTED)
    session.add(ep)
    session.flush()
    for i, t in enumerate(TEXTS):
        session.add(Insight(episode_id=ep.id, idx=i, start=i * 10.0, end=i * 10.0 + 5, text=t, substance=0.5))
    session.flush()
    assert embeddings.embed_episode(session, ep.id) == len(TEXTS)
    assert ep.status == EpisodeStatus.READY
    rows = session.scalars(select(Insight).where(Insight.episode_id == ep.id)).all()
    assert all(r.embedding is not None and len(r.embedding) == 4 * encoder.DIM for r in rows)
    assert {r.embedding_model for r in rows} == {encoder.model_name()}
    before = [r.embedding for r in rows]
    assert embeddings.embed_episode(session, ep.id) == len(TEXTS)  # idempotent
    assert [r.embedding for r in rows] == before


@pytest.mark.slow
def test_workers_exporting_at_once_on_a_fresh_machine_each_get_the_int8_model(tmp_path, model_cache) -> None:
    """Two Celery workers embedding at once on a fresh machine both export the ONNX model. onnxruntime's quantiser
    writes a fixed-name file next to its input (<fp32>-inferred.onnx), so two at once read each other's half-written
    file: one failed ("Wire format was corrupt" in `make run`) and ran on torch, 3x slower, for the rest of its life.
    Each worker here is its own process, as Celery's are; the fp32 export is there already, so they race in the
    quantiser, where the collision was (checked: without the lock one of them fails)."""
    import subprocess
    import sys

    from app.ml.onnx_backend import EXPORT_VERSION, export

    model = encoder._bundled_model_path()
    assert model is not None
    fp32 = export(model, model_cache / "all-MiniLM-L6-v2", quantize=False)
    fresh = tmp_path / "models"
    fresh.mkdir()
    shutil.copy(fp32, fresh / fp32.name)
    script = (
        "import sys; from pathlib import Path; from app.ml.encoder import _bundled_model_path; "
        "from app.ml.onnx_backend import OnnxEncoder, export; "
        "p = export(_bundled_model_path(), Path(sys.argv[1])); OnnxEncoder(_bundled_model_path(), p); print(p)"
    )
    command = [sys.executable, "-c", script, str(fresh)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err[-2000:]
        assert out.strip() == str(fresh / f"encoder-v{EXPORT_VERSION}-int8.onnx")
    left = sorted(p.name for p in fresh.iterdir() if not p.name.startswith("."))
    assert left == [f"encoder-v{EXPORT_VERSION}-fp32.onnx", f"encoder-v{EXPORT_VERSION}-int8.onnx"]
