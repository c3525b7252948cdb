"""SAM attention with the decomposed rel-pos bias folded into q and k equals the reference's materialised bias."""
from __future__ import annotations

import pytest
import torch

from dsocr_model.modeling.config import SamConfig
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
    monkeypatch.setattr(Attention, "forward", lambda self, x: original(self, x, fold=False))
    assert (folded - block(x)).abs().max() < 1e-5
