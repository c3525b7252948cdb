"""Decode-step CUDA graphs.

Batch-1 decode is launch-bound: about 400 small kernels per token, each a few microseconds of GPU work
behind tens of microseconds of Python and launch overhead (profile in benchmarks/RESULTS.md). Replaying
the step as one captured graph removes that overhead (gpt-fast compiles the same hot step).

A graph has fixed shapes and addresses, so one is captured per (rows, attention length) pair: rows are
a power of two (batch.decode_rows) and the attention length is rounded by `bucket_kv_len`, as the eager
`decode_step` does, so graph and eager paths see the same shapes. With ragged attention (a Triton kernel that
reads each row's length from the device) the length is the cache's: one graph per row count. Inputs are copied into static
buffers; the logits land in a static buffer outside the graph pool, so graphs share one pool and keep
no per-graph output alive (a [256, 129280] fp32 output per graph would otherwise cost 132 MB each).
"""
from __future__ import annotations

import logging

import torch

from ..modeling.decoder import KVCache
from .batch import StepInputs
from .generate import bucket_kv_len, decode_step

logger = logging.getLogger(__name__)


class GraphCaptureError(RuntimeError):
    """Warming up, capturing or replaying the decode step as a graph failed; eager decoding still works
    (the engine then re-runs the step eagerly: it rewrites the same K/V, so a half-run replay is harmless)."""


class DecodeGraphs:
    """Replays the batched decode step (embed -> 12 layers -> last-position head) as CUDA graphs."""

    def __init__(self, model, cache: KVCache) -> None:
        B, device = cache.k.shape[1], model.device
        self.model, self.cache = model, cache
        self.step_fn = decode_step  # benchmarks/step_profile.py swaps in a torch.compile'd step
        self.tokens = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.positions = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.slots = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.visible = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.logits = torch.zeros(B, model.config.decoder.vocab_size, dtype=torch.float32, device=device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}

    def _forward(self, n: int, kv_len: int) -> None:
        self.logits[:n].copy_(self.step_fn(self.model, self.tokens[:n], self.positions[:n], self.cache.prefix(n), kv_len,
                                           self.slots[:n], self.visible[:n]))

    def step(self, inputs: StepInputs) -> torch.Tensor:
        """One decode step -> logits [n, V] (a view of a static buffer: use before the next step)."""
        n = inputs.n
        # Ragged attention reads each row's length on the device: one graph per row count serves every length.
        kv_len = self.cache.max_len if self.cache.ragged else bucket_kv_len(inputs.kv_len, self.cache.max_len)
        for buffer, value in ((self.tokens, inputs.tokens), (self.positions, inputs.positions),
                              (self.slots, inputs.slots), (self.visible, inputs.visible)):
            buffer[:n].copy_(value)
        graph = self.graphs.get((n, kv_len))
        if graph is None:
            graph = self._capture(n, kv_len)
        try:
            graph.replay()
        except Exception as e:
            raise GraphCaptureError(f"replaying the decode graph (rows {n}, kv_len {kv_len}) failed: {e}") from e
        return self.logits[:n]

    def _capture(self, n: int, kv_len: int) -> torch.cuda.CUDAGraph:
        # Warm up on a side stream first (cuDNN plans, lazy inits), as torch.cuda.graphs recommends. The
        # warm-up writes the same K/V the replay writes, so running it is harmless.
        graph = torch.cuda.CUDAGraph()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._forward(n, kv_len)
            torch.cuda.current_stream().wait_stream(side)
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                self._forward(n, kv_len)
        except Exception as e:
            raise GraphCaptureError(f"warming up or capturing the decode step (rows {n}, kv_len {kv_len}) "
                                    f"failed: {e}") from e
        self.graphs[(n, kv_len)] = graph
        logger.debug("captured decode graph rows=%d kv_len=%d", n, kv_len)
        return graph
