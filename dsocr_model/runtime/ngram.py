"""The official windowed no-repeat n-gram guard (DeepSeek-OCR `process/ngram_norepeat.py`, §6.2).

Only n-grams that *start* within the last `window_size` generated ids are considered; banned ids in
the whitelist (`<td>`, `</td>` officially) stay allowed. With `window_size=None` and no whitelist this
is transformers' `NoRepeatNGramLogitsProcessor` over whatever sequence is passed in.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def banned_ngram_tokens(ids: Sequence[int], ngram_size: int, window_size: int | None = None,
                        whitelist: Iterable[int] = ()) -> set[int]:
    """Ids that would complete an n-gram already seen in `ids` (generated ids, oldest first)."""
    ids = list(ids)
    n = ngram_size
    if n < 1 or len(ids) < n:
        return set()
    prefix = ids[len(ids) - (n - 1):] if n > 1 else []
    first = 0 if window_size is None else max(0, len(ids) - window_size)
    banned = {ids[i + n - 1] for i in range(first, len(ids) - n + 1) if ids[i:i + n - 1] == prefix}
    return banned - set(whitelist)


def apply_ngram_guard(logits: torch.Tensor, ids: Sequence[int], ngram_size: int | None,
                      window_size: int | None, whitelist: Iterable[int]) -> torch.Tensor:
    """Set banned ids' logits to -inf (a no-op when the guard is off)."""
    if not ngram_size:
        return logits
    banned = banned_ngram_tokens(ids, ngram_size, window_size, whitelist)
    if banned:
        logits = logits.clone()
        logits[..., sorted(banned)] = float("-inf")
    return logits


def ngram_penalty(tail: torch.Tensor, lengths: torch.Tensor, ngram_size: int, whitelist: torch.Tensor,
                  vocab_size: int) -> torch.Tensor:
    """The same guard for a batch, as tensor ops (no host sync): -inf where banned, 0 elsewhere.

    tail: [B, W] the last W = window_size generated ids per row, right-aligned (older slots unused
    while lengths < W); lengths: [B] generated so far. An n-gram starting at tail index j starts at
    generated index lengths - W + j, so it is inside the window iff j >= W - lengths.
    """
    B, W = tail.shape
    n = ngram_size
    if n < 2 or W < n:
        raise ValueError("the batched guard needs 2 <= ngram_size <= window_size")
    starts = W - n + 1
    prefix = tail[:, W - n + 1:]  # (B, n-1): the newest n-1 ids
    grams = tail.unfold(1, n - 1, 1)[:, :starts]  # (B, starts, n-1)
    hit = (grams == prefix[:, None]).all(-1)  # (B, starts)
    j = torch.arange(starts, device=tail.device)
    hit &= j[None] >= (W - lengths)[:, None]
    banned = tail[:, n - 1:]  # (B, starts): the id that followed each n-1 prefix
    hit &= ~torch.isin(banned, whitelist)
    pen = torch.zeros(B, vocab_size, device=tail.device)
    values = torch.where(hit, float("-inf"), 0.0)
    return pen.scatter_reduce_(1, banned.clamp(min=0), values, reduce="amin")
