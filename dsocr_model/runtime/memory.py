"""How many pages the engine keeps in flight: the KV cache's memory plan, apart from graph capture.

A KV cache row holds one page (prompt + answer); each row also costs its share of the per-step buffers: the
logits a step leaves (fp32 in the batch state and in the graphs' static output) and those it makes inside the
graph pool (the head's output in the model dtype, then its fp32 copy). On CUDA the rows come from the free
memory times `memory_fraction`, less a reserve for one admission group's vision and prefill activations;
on CPU a small fixed batch.
"""
from __future__ import annotations

import torch

from ..family.spec import MAX_GUARD_WINDOW
from ..modeling.decode_attention import FP8
from .choose import bytes_per_row

# one admission group: 16 Gundam pages' vision and a 16,384-token prefill (sized when vision ran 16 views a forward;
# vision.MAX_VIEWS_PER_BATCH is 32 since, not re-measured: the other half of memory_fraction's default is the slack)
ACTIVATION_RESERVE = 3 * 2**30
CPU_MAX_BATCH = 4  # one constant for every CPU surface: 4 rows of 8,192 tokens of the full model are ~4 GiB in fp32
# Decoded tokens per second still grow past 256 rows (H200, one step at kv 1,536: 256 rows 41 µs a token,
# 512 rows 32 µs); past 512 a row's admission (vision + prefill) dominates its share of the steps.
MAX_BATCH_CAP = 512
DEFAULT_MEMORY_FRACTION = 0.5  # of the free GPU memory: leaves room for another model beside the engine


def kv_bytes_per_token(model, kv_dtype: str | None = None) -> int:
    """K and V of one token; fp8: one byte an entry and an fp32 scale per head."""
    d = model.config.decoder
    per_head = d.head_dim + 4 if kv_dtype == FP8 else d.head_dim * model.dtype.itemsize
    return 2 * d.num_hidden_layers * d.num_key_value_heads * per_head


def row_bytes(model, row_len: int, kv_dtype: str | None = None) -> int:
    """What one page in flight costs: its KV cache row, its rows of the step's logits buffers, and its guard state
    (the id history and the fused choice's ban list, int64 each, and its ban bitmap, a bit per vocabulary id)."""
    vocab = model.config.decoder.vocab_size
    guard = 8 * MAX_GUARD_WINDOW + bytes_per_row(vocab, MAX_GUARD_WINDOW)
    return kv_bytes_per_token(model, kv_dtype) * row_len + vocab * (3 * 4 + model.dtype.itemsize) + guard


def plan_max_batch(model, max_seq_len: int, memory_fraction: float = DEFAULT_MEMORY_FRACTION,
                   max_batch_tokens: int | None = None, free_bytes: int | None = None,
                   kv_dtype: str | None = None) -> int:
    """Pages in flight: from a KV token budget if given, else from the free GPU memory (`free_bytes`, default
    as the device reports it); CPU_MAX_BATCH on CPU."""
    if max_batch_tokens is not None:
        return max(1, min(MAX_BATCH_CAP, max_batch_tokens // max_seq_len))
    if model.device.type != "cuda" and free_bytes is None:
        return CPU_MAX_BATCH
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    free = free_bytes if free_bytes is not None else torch.cuda.mem_get_info(model.device)[0]
    budget = free * memory_fraction - ACTIVATION_RESERVE
    per_row = row_bytes(model, max_seq_len, kv_dtype)
    n = int(budget // per_row)
    if n < 1:
        raise MemoryError(f"{free / 2**30:.1f} GiB free leaves no room for one {max_seq_len}-token KV cache row "
                          f"({per_row / 2**30:.2f} GiB); lower max_seq_len")
    return min(n, MAX_BATCH_CAP)
