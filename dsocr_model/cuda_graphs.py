"""Decode-step CUDA graphs and the memory budget that sizes the engine's batch.

Batch-1 decode is launch-bound: about 400 small kernels per token, each a few microseconds of GPU work
behind tens of microseconds of Python and launch overhead (profile in benchmarks/RESULTS.md). Replaying
the step as one captured graph removes that overhead (gpt-fast compiles the same hot step).

A graph has fixed shapes and addresses, so one is captured per (rows, attention length) pair: rows are
a power of two (engine._rows) and the attention length is rounded up to KV_LEN_BUCKET (model.hidden
does the same rounding, so graph and eager paths see the same shapes). Inputs are copied into static
buffers; the logits land in a static buffer outside the graph pool, so graphs share one pool and keep
no per-graph output alive (a [256, 129280] fp32 output per graph would otherwise cost 132 MB each).
"""
from __future__ import annotations

import logging

import torch

from .decoder import KVCache
from .model import KV_LEN_BUCKET

logger = logging.getLogger(__name__)

ACTIVATION_RESERVE = 3 * 2**30  # bytes kept free for vision and prefill activations
CPU_MAX_BATCH = 8
MAX_BATCH_CAP = 256


def kv_bytes_per_token(model) -> int:
    d = model.config.decoder
    return 2 * d.num_hidden_layers * d.num_key_value_heads * d.head_dim * model.dtype.itemsize  # K and V


def plan_max_batch(model, max_seq_len: int, memory_fraction: float = 0.9,
                   max_batch_tokens: int | None = None) -> int:
    """Pages in flight: from a KV token budget if given, else from the free GPU memory (8 on CPU)."""
    if max_batch_tokens is not None:
        return max(1, min(MAX_BATCH_CAP, max_batch_tokens // max_seq_len))
    if model.device.type != "cuda":
        return CPU_MAX_BATCH
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    free, _ = torch.cuda.mem_get_info(model.device)
    budget = free * memory_fraction - ACTIVATION_RESERVE
    per_slot = kv_bytes_per_token(model) * max_seq_len
    n = int(budget // per_slot)
    if n < 1:
        raise MemoryError(f"{free / 2**30:.1f} GiB free leaves no room for one {max_seq_len}-token KV cache row "
                          f"({per_slot / 2**30:.2f} GiB); lower max_seq_len")
    return min(n, MAX_BATCH_CAP)


class GraphCaptureError(RuntimeError):
    """Capturing the decode step failed (an op that cannot be captured); eager decoding still works."""


class DecodeGraphs:
    """Replays the batched decode step (embed -> 12 layers -> last-position head) as CUDA graphs."""

    def __init__(self, model, cache: KVCache) -> None:
        B, device = cache.k.shape[1], model.device
        self.model, self.cache = model, cache
        self.tokens = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.logits = torch.zeros(B, model.config.decoder.vocab_size, dtype=torch.float32, device=device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}

    def _forward(self, n: int, kv_len: int) -> None:
        x = self.model.model.embed_tokens(self.tokens[:n])
        self.logits[:n].copy_(self.model.step(x, self.positions[:n], self.cache.prefix(n), kv_len))

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """tokens, positions [n, 1] -> logits [n, V] (a view of a static buffer: use before the next step)."""
        n = tokens.shape[0]
        kv_len = min(-(-kv_len // KV_LEN_BUCKET) * KV_LEN_BUCKET, self.cache.max_len)
        self.tokens[:n].copy_(tokens)
        self.positions[:n].copy_(positions)
        graph = self.graphs.get((n, kv_len))
        if graph is None:
            graph = self._capture(n, kv_len)
        graph.replay()
        return self.logits[:n]

    def _capture(self, n: int, kv_len: int) -> torch.cuda.CUDAGraph:
        # Warm up on a side stream first (cuDNN plans, lazy inits), as torch.cuda.graphs recommends. The
        # warm-up writes the same K/V the replay writes, so running it is harmless.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(n, kv_len)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                self._forward(n, kv_len)
        except Exception as e:
            raise GraphCaptureError(f"capturing the decode step (rows {n}, kv_len {kv_len}) failed: {e}") from e
        self.graphs[(n, kv_len)] = graph
        logger.debug("captured decode graph rows=%d kv_len=%d", n, kv_len)
        return graph
