"""The engine's token choice on CUDA in three kernel launches (choose_kernels.py): the n-gram guard of every row,
the greedy id, and the quality signals, each row with its own guard settings read from the device.

Why: at batch 1 the eager choice (BatchState.choose: the guard as tensor ops per group of rows, logsumexp, two
argmaxes, the history shift) was ≈ 35 small kernels and index copies between two decode steps: 0.91 ms of host
time a step and ≈ 0.23 ms of GPU time on the critical path, against a 1.43 ms step (benchmarks/RESULTS.md). The
eager code stays the reference: it runs on the CPU, and the tests hold this path to it id for id.
"""
from __future__ import annotations

import functools

import torch

from ..modeling import fused

BLOCK_V = 4096  # logits per program of block_maxima: 32 blocks for the 129,280-id vocabulary
J_BLOCK = 128  # n-gram starts per vector in ban_ngrams (the official windows: 50, 90, 128)
MAX_WHITELIST = 64  # ids a request's guard may whitelist (official: 2, <td> and </td>)


@functools.cache
def _kernels():
    from . import choose_kernels  # Triton, on first use

    return choose_kernels


def available(device: torch.device) -> bool:
    """The fused choice runs where fused.py's kernels do: CUDA with Triton (and not switched off)."""
    return fused.ENABLED and fused.triton_runs_on(device)


def bytes_per_row(vocab_size: int, window: int) -> int:
    """What a row costs here beyond a few scalars: its ban list (int64) and its ban bitmap."""
    return 8 * window + 4 * -(-vocab_size // 32)


class FusedChoice:
    """Scratch buffers for up to `max_batch` rows; `__call__` chooses for rows 0..n in place of BatchState.choose."""

    def __init__(self, max_batch: int, vocab_size: int, window: int, device: torch.device) -> None:
        self.vocab, self.window = vocab_size, window
        self.words = -(-vocab_size // 32)
        self.blocks = -(-vocab_size // BLOCK_V)
        self.bits = torch.zeros(max_batch, self.words, dtype=torch.int32, device=device)  # all zero between steps
        self.banned = torch.full((max_batch, window), -1, dtype=torch.long, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        self.raw_max, self.raw_sum, self.guard_max = (torch.empty(max_batch, self.blocks, **f32) for _ in range(3))
        self.raw_arg, self.guard_arg = (torch.empty(max_batch, self.blocks, dtype=torch.int32, device=device)
                                        for _ in range(2))
        self.chosen = torch.empty(max_batch, dtype=torch.long, device=device)
        # each row's guard, read on the device (the eager choice groups rows by their Slot.guard instead)
        self.ngram = torch.zeros(max_batch, dtype=torch.int32, device=device)  # 0: no guard
        self.guard_window = torch.zeros(max_batch, dtype=torch.int32, device=device)
        self.whitelist = torch.full((max_batch, MAX_WHITELIST), -1, dtype=torch.long, device=device)  # -1 padded

    def set_guard(self, row: int, ngram: int, window: int, whitelist: torch.Tensor) -> None:
        """A new page's guard in `row` (ngram 0: none); whitelist: its ids, already on the device (<= MAX_WHITELIST)."""
        self.ngram[row], self.guard_window[row] = ngram, window
        self.whitelist[row].fill_(-1)
        self.whitelist[row, :whitelist.numel()] = whitelist

    def __call__(self, n: int, logits: torch.Tensor, tail: torch.Tensor, lengths: torch.Tensor,
                 logprob_sum: torch.Tensor, logprob_min: torch.Tensor, guard_hits: torch.Tensor) -> torch.Tensor:
        """Rows 0..n: logits [B, V] fp32, history tail [B, W] and lengths [B] (both advanced here), running
        signals [B] (updated) -> the chosen ids [n] (a view of a buffer the next call overwrites)."""
        k = _kernels()
        W, V, WL = self.window, self.vocab, MAX_WHITELIST
        k.ban_ngrams[(n,)](tail, lengths, self.ngram, self.guard_window, self.whitelist, self.banned, self.bits, W=W,
                           WL=WL,
                           WORDS=self.words, J_BLOCK=J_BLOCK, WL_BLOCK=fused.triton_block(WL), num_warps=4)
        k.block_maxima[(n, self.blocks)](logits, self.bits, self.raw_max, self.raw_arg, self.raw_sum, self.guard_max,
                                         self.guard_arg, V=V, WORDS=self.words, BLOCKS=self.blocks, BLOCK_V=BLOCK_V,
                                         num_warps=8)
        k.pick[(n,)](self.raw_max, self.raw_arg, self.raw_sum, self.guard_max, self.guard_arg, self.banned, self.bits,
                     tail, lengths, self.chosen, logprob_sum, logprob_min, guard_hits, V=V, W=W, WORDS=self.words,
                     BLOCKS=self.blocks, B_BLOCK=fused.triton_block(self.blocks), W_BLOCK=fused.triton_block(W),
                     num_warps=4)
        return self.chosen[:n]
