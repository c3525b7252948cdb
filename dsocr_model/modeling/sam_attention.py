"""SAM's attention with its decomposed rel-pos bias in one Triton kernel (CUDA), q/k/v read where they lie.

The reference adds the bias as an [N, N] `attn_mask`; `sam.fold_rel_pos` folds it into q and k so flash kernels run
it, at the price of concatenations, padded copies and a head dim of 64 + H + W (192 for a 1024² view's global
layers). Profiled on an H200, SAM spent more time in those copies than in its matmuls (benchmarks/RESULTS.md).
This kernel takes the qkv projection's output as it is ([B, N, 3, heads, hd]), adds bh[q, row(k)] + bw[q, col(k)]
to each score inside the softmax loop (the flex-attention `score_mod` idea, written out), and writes [B, N, C]
for the out projection: no permute, no concatenation, head dim 64. Triton is imported on first use.
"""
from __future__ import annotations

import functools

import torch

from .fused import triton_block, triton_runs_on

BLOCK_M, NUM_WARPS, NUM_STAGES = 64, 4, 3  # queries per program (benchmarks/vision_speed.py --sweep)


@functools.cache
def _kernel():
    from . import sam_kernels  # Triton, on first use

    return sam_kernels.attend


def runs_on(x: torch.Tensor) -> bool:
    """Whether the kernel can run on x's device: CUDA with Triton (the CPU keeps the folded SDPA path)."""
    return triton_runs_on(x.device)


def rel_pos_attention(qkv: torch.Tensor, qkv_bias: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor,
                      hw: tuple[int, int], window: int, scale: float,
                      block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Attention of every token over the tokens of its window (window 0: over the whole grid), with SAM's rel-pos bias.

    qkv [B, H*W, 3, heads, hd] with each head's hd contiguous (the qkv Linear's output over the *unpartitioned*
    grid, reshaped); qkv_bias [3 * heads * hd]: a window cell past the grid's edge is padding, whose key and value
    are that bias (SAM pads the normalised input with zeros before the projection). bh [B, H, W, heads, >= win]
    and bw [B, H, W, heads, >= win] (any strides, `rel_pos_factors`; entries past win are not read): the bias of the query at (y, x) on the key in row kr,
    column kc of its window. -> [B, H*W, heads * hd] in qkv's dtype, for the out projection. fp32 inputs are
    multiplied in full fp32 (no TF32), so tests can compare against SDPA exactly; bf16 as flash attention does it.
    """
    B, N, three, heads, hd = qkv.shape
    H, W = hw
    win_h, win_w = (window, window) if window else (H, W)
    if three != 3 or N != H * W or qkv.stride(4) != 1 or qkv.stride(3) != hd:
        raise ValueError(f"qkv must be [B, {H * W}, 3, heads, hd] with contiguous heads, got {tuple(qkv.shape)}")
    if bh.shape[:-1] != (B, H, W, heads) or bw.shape[:-1] != (B, H, W, heads) or bh.shape[-1] < win_h \
            or bw.shape[-1] < win_w:
        raise ValueError(f"bias factors {tuple(bh.shape)}, {tuple(bw.shape)} do not match a {H}x{W} grid's "
                         f"{win_h}x{win_w} windows")
    bm, warps, stages = block or (BLOCK_M, NUM_WARPS, NUM_STAGES)
    bn = triton_block(win_w)  # keys go a window row at a time, padded to a power of two
    windows_y, windows_x = -(-H // win_h), -(-W // win_w)
    query_blocks = -(-(win_h * win_w) // bm)
    out = torch.empty(B, N, heads * hd, device=qkv.device, dtype=qkv.dtype)
    _kernel()[(windows_y * windows_x * query_blocks, B * heads)](
        qkv, qkv_bias, bh, bw, out, scale, H, W, win_h, win_w, windows_x, query_blocks,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        *bh.stride(), *bw.stride(),
        out.stride(0), out.stride(1),
        HEADS=heads, D=hd, BM=bm, BN=bn, PADDED=H % win_h != 0 or W % win_w != 0,
        IEEE=qkv.dtype == torch.float32, num_warps=warps, num_stages=stages)
    return out
