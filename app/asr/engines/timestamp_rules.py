"""A vectorised drop-in for openai-whisper's ApplyTimestampRules logit filter.

The original loops over the batch in Python at every decoding step (whisper/decoding.py), reading tokens back to
the host with .tolist(): on a GPU the device waits on the CPU and batched decoding with timestamps stalls near
700x real time (../shared/gpu/README.md). This version expresses the same rules as tensor operations over the
whole batch, so one step costs a handful of kernel launches whatever the batch size.
"""

from __future__ import annotations

from typing import Any

import torch
from whisper.decoding import ApplyTimestampRules, DecodingTask


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


def make_task(model: Any, options: Any, *, vectorised: bool = True) -> DecodingTask:
    """A DecodingTask whose timestamp filter is the vectorised one (same rules, same output)."""
    task = DecodingTask(model, options)
    if vectorised:
        task.logit_filters = [
            BatchedTimestampRules(f.tokenizer, f.sample_begin, f.max_initial_timestamp_index)
            if isinstance(f, ApplyTimestampRules)
            else f
            for f in task.logit_filters
        ]
    return task
