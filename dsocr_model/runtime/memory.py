"""How many pages the engine keeps in flight: the KV cache's memory plan, apart from graph capture.

A KV cache row holds one page (prompt + answer). On CUDA the rows come from the free memory times
`memory_fraction`, less a reserve for vision and prefill activations; on CPU a small fixed batch.
"""
from __future__ import annotations

import torch

ACTIVATION_RESERVE = 3 * 2**30  # bytes kept free for vision and prefill activations
CPU_MAX_BATCH = 4  # one constant for every CPU surface: 4 rows of 8,192 tokens of the full model are ~4 GiB in fp32
MAX_BATCH_CAP = 256
DEFAULT_MEMORY_FRACTION = 0.5  # of the free GPU memory: leaves room for another model beside the engine


def kv_bytes_per_token(model) -> int:
    d = model.config.decoder
    return 2 * d.num_hidden_layers * d.num_key_value_heads * d.head_dim * model.dtype.itemsize  # K and V


def plan_max_batch(model, max_seq_len: int, memory_fraction: float = DEFAULT_MEMORY_FRACTION,
                   max_batch_tokens: int | None = None, free_bytes: int | None = None) -> int:
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
    per_slot = kv_bytes_per_token(model) * max_seq_len
    n = int(budget // per_slot)
    if n < 1:
        raise MemoryError(f"{free / 2**30:.1f} GiB free leaves no room for one {max_seq_len}-token KV cache row "
                          f"({per_slot / 2**30:.2f} GiB); lower max_seq_len")
    return min(n, MAX_BATCH_CAP)
