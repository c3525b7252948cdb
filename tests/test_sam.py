"""SAM attention with the decomposed rel-pos bias folded into q and k equals the reference's materialised bias."""
from __future__ import annotations

import pytest
import torch

from dsocr_model.modeling.config import SamConfig
from dsocr_model.modeling import sam as sam_mod
from dsocr_model.modeling.sam import Attention, Block


@pytest.mark.parametrize("grid", [(14, 14), (5, 7), (7, 5)])  # a window; non-square grids catch a row/column swap
def test_folded_rel_pos_attention_equals_the_materialised_bias(grid):
    torch.manual_seed(0)
    H, W = grid
    attn = Attention(dim=48, heads=3, rel_len=max(H, W))
    with torch.no_grad():  # the checkpoint's tables are trained; zeros would hide a wrong lookup
        attn.rel_pos_h.normal_(std=0.5)
        attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(2, H, W, 48)
    folded, reference = attn(x, fold=True), attn(x, fold=False)
    assert (folded - reference).abs().max() < 1e-5
    assert (attn(x.flip(1), fold=True) - reference).abs().max() > 1e-2  # the bias is position-dependent


def test_windowed_block_with_padding_is_unchanged_by_folding(monkeypatch):
    """A block whose grid is not a multiple of the window (padding is attended, as in SAM)."""
    torch.manual_seed(1)
    cfg = SamConfig(width=32, heads=2, window_size=4)
    block = Block(cfg, window_size=4)
    with torch.no_grad():
        block.attn.rel_pos_h.normal_(std=0.5)
        block.attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(1, 6, 6, 32)
    folded = block(x)
    original = Attention.forward
    monkeypatch.setattr(Attention, "forward", lambda self, x, **kw: original(self, x, fold=False, **kw))
    assert (folded - block(x)).abs().max() < 1e-5


@pytest.mark.parametrize("grid,window", [((5, 7), 0), ((3, 11), 0), ((6, 6), 4), ((5, 9), 4), ((8, 8), 4)])
def test_rel_pos_kernel_equals_the_reference_block(grid, window, monkeypatch):
    """The Triton kernel (through its interpreter on the CPU; compiled on CUDA in test_cuda.py) reads q/k/v from the
    qkv projection's output over the whole grid, cuts windows itself (cells past the edge are padding: key and
    value are the projection's bias) and adds the bias inside its softmax loop: the reference block's output.
    Non-square grids (and 2 x 3 windows) catch a row/column swap; (6, 6) and (5, 9) windows pad, (8, 8) does not."""
    import importlib.util
    import sys

    if torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        pytest.skip("needs Triton on a CPU machine (on CUDA the compiled kernel is tested: test_cuda.py)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernel module is first imported
    from dsocr_model.modeling import sam_attention

    sam_attention._kernel.cache_clear()
    sys.modules.pop("dsocr_model.modeling.sam_kernels", None)
    try:
        torch.manual_seed(2)
        H, W = grid
        block = Block(SamConfig(width=64, heads=2, window_size=window, image_size=16 * max(H, W)), window)
        with torch.no_grad():
            for t in (block.attn.rel_pos_h, block.attn.rel_pos_w, block.attn.qkv.bias):
                t.normal_(std=0.5)  # trained tables, and a bias that padded keys must carry
        x = torch.randn(2, H, W, 64)
        with torch.no_grad():
            reference = block(x)  # SDPA with the materialised bias, on windows cut by window_partition
            monkeypatch.setattr(sam_mod, "runs_on", lambda x: True)  # the kernel on CPU tensors
            got = block(x)
            monkeypatch.setattr(sam_attention, "BLOCK_M", 16)  # several query blocks, the last part-filled
            small = block(x)
        assert (got - reference).abs().max() < 1e-5
        assert (small - reference).abs().max() < 1e-5
    finally:
        sam_attention._kernel.cache_clear()
        sys.modules.pop("dsocr_model.modeling.sam_kernels", None)
