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
