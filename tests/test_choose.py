"""The fused token choice (runtime/choose.py) against the eager BatchState.choose it replaces, id for id.

Its kernels are Triton: here they run through Triton's interpreter on the CPU (skipped where Triton is missing,
as in CI, whose CPU build of torch comes without it); tests/test_cuda_kernels.py runs them compiled on a GPU.
Rows carry different guards (none, short windows, a whitelist, the official PDF guard) and logits that favour a
short cycle, so the guard bans ids and changes the greedy choice often.
"""
from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import Future

import pytest
import torch

from dsocr_model.runtime import choose
from dsocr_model.runtime.batch import MAX_WINDOW, BatchState, PageRequest, Pending

pytestmark = pytest.mark.skipif(torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs Triton on a CPU machine (on CUDA: test_cuda_kernels.py)")

GUARDS = [(3, 30, {7}), None, (2, 6, set()), (20, 50, {1, 2}), (3, 1024, set())]  # (ngram, window, whitelist)


@pytest.fixture
def interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernel module is first imported
    choose._kernels.cache_clear()
    sys.modules.pop("dsocr_model.runtime.choose_kernels", None)
    yield
    choose._kernels.cache_clear()
    sys.modules.pop("dsocr_model.runtime.choose_kernels", None)


def started(vocab: int, fused: bool) -> BatchState:
    state = BatchState(len(GUARDS), vocab, torch.device("cpu"))
    state.fused = choose.FusedChoice(len(GUARDS), vocab, MAX_WINDOW, torch.device("cpu")) if fused else None
    for row, guard in enumerate(GUARDS):
        n, w, white = guard or (None, None, ())
        request = PageRequest(torch.zeros(4, dtype=torch.long), (), 10 ** 6, n, w, white, -1)
        state.start(row, Pending(request, Future(), None, 0.0), 4, -1, {})
    return state


@pytest.mark.parametrize("block", [4096, 16])  # one block per row; several, the last one partly past the vocab
def test_fused_choice_equals_the_eager_choice(block, interpreted, monkeypatch):
    monkeypatch.setattr(choose, "BLOCK_V", block)
    vocab, steps, rows = 50, 40, len(GUARDS)
    eager, fused = started(vocab, False), started(vocab, True)
    g = torch.Generator().manual_seed(0)
    cycle = torch.tensor([7, 3, 9])  # favoured in turn: a 3-cycle every guard must break
    for t in range(steps):
        logits = torch.randn(rows, vocab, generator=g)
        logits[:, cycle[t % 3]] += 4.0
        logits[:, 1] += 3.5  # whitelisted for one row: never banned there
        for state in (eager, fused):
            state.logits[:rows] = logits
        want, got = eager.choose(rows), fused.choose(rows)
        assert torch.equal(got, want), (t, got, want)
    assert torch.equal(fused.tail, eager.tail) and torch.equal(fused.lengths, eager.lengths)
    assert torch.equal(fused.guard_hits, eager.guard_hits) and eager.guard_hits[[0, 2, 4]].min() > 0
    assert eager.guard_hits[1] == 0  # no guard, no hits
    torch.testing.assert_close(fused.logprob_sum, eager.logprob_sum)
    torch.testing.assert_close(fused.logprob_min, eager.logprob_min)
    assert not fused.fused.bits.any()  # the bitmap is left clear for the next step
