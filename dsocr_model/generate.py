"""Greedy decoding for one sequence: prefill once, then one-token steps over a static KV cache.

This is the simple, faithful path (the yardstick for the batched engine): stop at EOS (kept as the
last id, as HF `generate` does) or after `max_new_tokens`, optional official n-gram guard.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .decoder import KVCache
from .ngram import apply_ngram_guard


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str  # "eos" | "length"
    step_logits: list[torch.Tensor] = field(default_factory=list)  # raw logits per step, when asked


@torch.inference_mode()
def greedy_generate(model, input_ids: torch.Tensor, images, max_new_tokens: int, *, eos_id: int | None = None,
                    ngram_size: int | None = None, window_size: int | None = None,
                    whitelist: Iterable[int] = (), keep_logits: bool = False) -> Generation:
    device = model.device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device).view(1, -1)  # (1, T)
    T = ids.shape[1]
    eos = model.eos_token_id if eos_id is None else eos_id
    whitelist = set(whitelist)
    cache = KVCache(model.config.decoder, 1, T + max_new_tokens, device, model.dtype)
    logits = model.step(model.embed(ids, images), torch.arange(T, device=device)[None], cache)  # (1, V)
    out: list[int] = []
    kept: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        if keep_logits:
            kept.append(logits[0].cpu())
        guarded = apply_ngram_guard(logits[0], out, ngram_size, window_size, whitelist)
        nxt = int(guarded.argmax())
        out.append(nxt)
        if nxt == eos:
            return Generation(out, "eos", kept)
        if i + 1 == max_new_tokens:
            break
        tok = torch.tensor([[nxt]], device=device)
        logits = model.step(model.model.embed_tokens(tok), torch.tensor([[T + i]], device=device), cache)
    return Generation(out, "length", kept)
