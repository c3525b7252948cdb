"""The hot path, named once (gpt-fast style), and greedy decoding of one sequence over it.

`prefill` runs embeddings through the decoder into the KV cache and returns the last position's
logits; `decode_step` does the same for one token per row. The one-sequence `generate` below, the batched
engine and the CUDA graphs all call these two, and `bucket_kv_len` is the one place attention lengths are
rounded. `generate` is the simple, faithful path (the yardstick for the engine): stop at EOS (kept as the
last id, as HF `generate` does) or after `max_new_tokens`, optional official n-gram guard. A model with
a sliding window (Unlimited-OCR) decodes with R-SWA over a ring after the prompt.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ..family.spec import DEFAULT_MAX_NEW_TOKENS
from ..modeling.decoder import KVCache, ring_slot
from ..modeling.preprocess import ImageViews
from .ngram import apply_ngram_guard

KV_LEN_BUCKET = 128  # attention reads kv slots rounded up to this: few shapes, no per-step cuDNN plan builds


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str  # "eos" | "length"
    step_logits: list[torch.Tensor] = field(default_factory=list)  # raw logits per step, when asked
    logprobs: list[float] = field(default_factory=list)  # each chosen id's log-probability under the raw logits
    guard_hits: int = 0  # steps where the n-gram guard banned the id greedy decoding would have chosen

    @property
    def signals(self) -> dict[str, float]:
        """The engine's quality signals for this sequence (PageOutput.signals)."""
        return {"mean_logprob": sum(self.logprobs) / len(self.logprobs), "min_logprob": min(self.logprobs),
                "guard_hits": self.guard_hits}


def bucket_kv_len(kv_len: int, max_len: int) -> int:
    """Round an attention length up to KV_LEN_BUCKET (the mask hides the extra slots), within the cache."""
    return min(-(-kv_len // KV_LEN_BUCKET) * KV_LEN_BUCKET, max_len)


def prefill(model, x: torch.Tensor, cache: KVCache, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Prompt embeddings x [B, T, D] into fresh cache rows (slots 0..T-1) -> float32 logits [B, V] of each
    prompt's last token. Prompts of different lengths come right-padded with `lengths` [B]: attention is
    causal, so padding after a prompt changes nothing in it (its K/V land in slots decoding overwrites
    before it reads them)."""
    B, T = x.shape[:2]
    h = model.hidden(x, torch.arange(T, device=x.device).expand(B, T), cache, fresh=True)
    last = h[:, -1] if lengths is None else h[torch.arange(B, device=x.device), lengths - 1]
    return model.lm_head(last).float()  # only the last position needs the 129k-wide head


def decode_step(model, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, kv_len: int,
                slots: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row: tokens, positions [B, 1] -> float32 logits [B, V]. Under R-SWA, `slots` and
    `visible` [B, 1] address the ring (decoder.ring_slot); by default both are the positions."""
    h = model.hidden(model.model.embed_tokens(tokens), positions, cache, bucket_kv_len(kv_len, cache.max_len),
                     slots, visible)
    return model.lm_head(h[:, -1]).float()


def cache_len(model, prompt_len: int, max_new_tokens: int) -> int:
    """KV slots one sequence needs: prompt + new tokens, or prompt + window under R-SWA."""
    window = model.config.decoder.sliding_window
    return prompt_len + (max_new_tokens if window is None else min(max_new_tokens, window))


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, images: Sequence[ImageViews] = (), max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, *,
             ngram_size: int | None = None, window_size: int | None = None, whitelist: Iterable[int] = (),
             eos_id: int | None = None, keep_logits: bool = False) -> Generation:
    """Greedy decoding of one prompt (ids from `model.build_input_ids`) -> new ids and finish reason.

    `eos_id=-1` never stops early (benchmarks); `keep_logits` keeps each step's raw logits (parity tests).
    """
    device = model.device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device).view(1, -1)  # (1, T)
    T = ids.shape[1]
    eos = model.eos_token_id if eos_id is None else eos_id
    whitelist = set(whitelist)
    window = model.config.decoder.sliding_window
    cache = KVCache(model.config.decoder, 1, cache_len(model, T, max_new_tokens), device, model.dtype)
    logits = prefill(model, model.embed(ids, images), cache)  # (1, V)
    gen = Generation([], "length")
    out, kept = gen.token_ids, gen.step_logits
    for i in range(max_new_tokens):
        raw = logits[0]
        if keep_logits:
            kept.append(raw.cpu())
        guarded = apply_ngram_guard(raw, out, ngram_size, window_size, whitelist)
        nxt = int(guarded.argmax())
        gen.guard_hits += int(guarded is not raw and int(raw.argmax()) != nxt)  # the guard changed the choice
        gen.logprobs.append(float(raw[nxt] - torch.logsumexp(raw, dim=-1)))
        out.append(nxt)
        if nxt == eos:
            gen.finish_reason = "eos"
            return gen
        if i + 1 == max_new_tokens:
            break
        slot, visible = ring_slot(T + i, T, window)
        logits = decode_step(model, torch.tensor([[nxt]], device=device), torch.tensor([[T + i]], device=device),
                             cache, visible + 1, torch.tensor([[slot]], device=device),
                             torch.tensor([[visible]], device=device))
    return gen
