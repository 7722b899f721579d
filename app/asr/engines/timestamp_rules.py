"""Drop-ins for the per-step parts of openai-whisper's DecodingTask that make a GPU wait on the host.

- ApplyTimestampRules loops over the batch in Python at every decoding step (whisper/decoding.py), reading
  tokens back with .tolist(): batched decoding with timestamps stalls near 700x real time on an H200
  (../shared/gpu/README.md). BatchedTimestampRules expresses the same rules as tensor operations over the whole
  batch, so one step costs a handful of kernel launches whatever the batch size.
- SuppressTokens indexes with a Python list and GreedyDecoder with a CPU arange: each is a host-to-device copy
  that waits for the queued kernels, every step. The versions here keep their indices on the device.
- Attention runs without cuDNN's SDPA backend (SDPA_BACKENDS). On the H100 (torch 2.11, 2026-11-26) the first
  pass at a row count the process had not seen took 3.8-4.0 s instead of 0.37-0.40 s (99 steps, ~35 ms extra
  each), once per row count: the signature of cuDNN attention, which torch 2.11 tries first on Hopper, building
  an execution plan for every new (rows, tokens so far) shape. Every episode brings new row counts. Flash /
  memory-efficient attention have no per-shape plans. (The change is not yet timed on a GPU: docs/benchmarks.md.)
Same rules, same arithmetic: the tokens decoded are identical (tests/test_asr_engines.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.distributions import Categorical
from torch.nn.attention import SDPBackend
from whisper.decoding import ApplyTimestampRules, DecodingTask, GreedyDecoder, SuppressTokens

# Every scaled_dot_product_attention backend but cuDNN, in torch's own order (see the module docstring).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class BatchedTimestampRules(ApplyTimestampRules):
    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        tok = self.tokenizer
        ts_begin: int = tok.timestamp_begin
        neg_inf = float("-inf")
        if tok.no_timestamps is not None:
            logits[:, tok.no_timestamps] = neg_inf

        sampled = tokens[:, self.sample_begin :]
        n = sampled.shape[1]
        if n > 0:
            is_ts = sampled >= ts_begin
            last_ts = is_ts[:, -1]
            penult_ts = is_ts[:, -2] if n >= 2 else torch.ones_like(last_ts)
            # Timestamps come in pairs, except directly before EOT.
            logits[:, ts_begin:].masked_fill_((last_ts & penult_ts)[:, None], neg_inf)
            logits[:, : tok.eot].masked_fill_((last_ts & ~penult_ts)[:, None], neg_inf)
            # Timestamps never decrease (so the last one is the max), and each segment has nonzero length.
            has_ts = is_ts.any(dim=1)
            last_value = torch.where(is_ts, sampled, torch.full_like(sampled, -1)).max(dim=1).values
            upper = torch.where(last_ts & ~penult_ts, last_value, last_value + 1)
            vocab = torch.arange(logits.shape[-1], device=logits.device)
            forbid = (vocab[None, :] >= ts_begin) & (vocab[None, :] < upper[:, None]) & has_ts[:, None]
            logits.masked_fill_(forbid, neg_inf)
        else:
            # The first sampled token must be a timestamp, at most max_initial_timestamp in.
            logits[:, :ts_begin] = neg_inf
            if self.max_initial_timestamp_index is not None:
                logits[:, ts_begin + self.max_initial_timestamp_index + 1 :] = neg_inf

        # If timestamps together are likelier than any single text token, emit a timestamp.
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        timestamp_logprob = logprobs[:, ts_begin:].logsumexp(dim=-1)
        max_text_logprob = logprobs[:, :ts_begin].max(dim=-1).values
        logits[:, :ts_begin].masked_fill_((timestamp_logprob > max_text_logprob)[:, None], neg_inf)


class DeviceSuppressTokens(SuppressTokens):
    """SuppressTokens with its index tensor made once on the logits' device."""

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        index = getattr(self, "_index", None)
        if index is None or index.device != logits.device:
            index = self._index = torch.tensor(self.suppress_tokens, dtype=torch.long, device=logits.device)
        logits.index_fill_(1, index, float("-inf"))


class DeviceGreedyDecoder(GreedyDecoder):
    """GreedyDecoder.update with gather() in place of indexing by a CPU arange.

    `temperature` may also be a (batch, 1) tensor: each row samples at its own temperature (all of
    transcribe()'s fallback temperatures decoded in one batch).
    """

    def update(
        self, tokens: torch.Tensor, logits: torch.Tensor, sum_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.temperature, float | int) and self.temperature == 0:
            next_tokens = logits.argmax(dim=-1)
        else:
            next_tokens = Categorical(logits=logits / self.temperature).sample()
        logprobs = F.log_softmax(logits.float(), dim=-1)
        current_logprobs = logprobs.gather(1, next_tokens[:, None]).squeeze(1)
        finished = tokens[:, -1] == self.eot
        sum_logprobs += current_logprobs * ~finished
        next_tokens[finished] = self.eot
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        return tokens, (tokens[:, -1] == self.eot).all()


def make_task(model: Any, options: Any, *, vectorised: bool = True) -> DecodingTask:
    """A DecodingTask whose per-step filters and greedy decoder stay on the device (same rules, same output).

    vectorised=False keeps openai-whisper's own classes: the bench's "looprules" variant measures the difference.
    """
    task = DecodingTask(model, options)
    if not vectorised:
        return task
    filters: list[Any] = []
    for f in task.logit_filters:
        if isinstance(f, ApplyTimestampRules):
            f = BatchedTimestampRules(f.tokenizer, f.sample_begin, f.max_initial_timestamp_index)
        elif isinstance(f, SuppressTokens):
            f = DeviceSuppressTokens(f.suppress_tokens)
        filters.append(f)
    task.logit_filters = filters
    if type(task.decoder) is GreedyDecoder:
        task.decoder = DeviceGreedyDecoder(task.decoder.temperature, task.decoder.eot)
    return task
