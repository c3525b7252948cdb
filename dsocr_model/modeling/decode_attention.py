"""Decode attention over each row's own length (ragged), from a bf16 or an fp8 (e4m3) KV cache: a Triton kernel.

One query token per row and head attends over cache slots 0..length-1 of its row, however long the others are:
mixed traffic no longer pays for the longest row's bucket. With an fp8 cache each key and value vector is
stored as e4m3 with its own fp32 scale (per token and head, `quantize`), halving what a step reads — decode
attention is bound by that read (PERFORMANCE.md §6: 93% of HBM in bf16).

The kernel is flash-decoding: the keys of a row are cut into `splits` chunks when rows x heads are too few to
fill the GPU (batch 1), each chunk keeps its running max, sum and weighted values, and a second kernel
combines them. Scores and softmax in fp32, as SDPA does. Triton is imported on first use (CUDA only).
"""
from __future__ import annotations

import functools

import torch

FP8 = "fp8"  # the one KV dtype besides the model's (Engine(kv_dtype=FP8))
FP8_MAX = 448.0  # largest finite float8_e4m3fn
TARGET_PROGRAMS = 1024  # rows x heads x splits wanted in flight (132 SMs on an H100/H200)
NUM_WARPS = 2  # with BLOCK below: the fastest of a sweep on an H200 (benchmarks/decode_kernel.py)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., hd] -> (e4m3 [..., hd], fp32 scale [...]): each vector scaled so its largest entry maps to 448."""
    scale = x.abs().amax(dim=-1).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale[..., None]).to(torch.float8_e4m3fn), scale


def dequantize(x: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    return x if scale is None else (x.float() * scale[..., None]).to(dtype)


def plan_splits(rows_heads: int, kv_len: int, block: int) -> int:
    """How many chunks each row's keys are cut into: enough programs to fill the GPU, chunks of >= 4 blocks."""
    if rows_heads >= TARGET_PROGRAMS:
        return 1
    splits = min(-(-TARGET_PROGRAMS // rows_heads), max(1, kv_len // (4 * block)))
    return 1 << (splits - 1).bit_length()  # a power of two: the combine kernel's width


@functools.cache
def _kernels():
    from . import decode_kernels  # Triton, on first use

    return decode_kernels.attend, decode_kernels.combine


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, kv_len: int,
                     k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                     block: int | None = None) -> torch.Tensor:
    """q [B, H, 1, hd]; one layer's cache k, v [B, H, S, hd] (bf16, or e4m3 with scales [B, H, S]); lengths [B]
    int32 (slots each row sees, <= kv_len) -> [B, H, 1, hd] in q's dtype. `kv_len` bounds the work split only."""
    attend, combine = _kernels()
    B, H, _, D = q.shape
    fp8 = k_scale is not None
    block = block or (64 if fp8 else 32)
    splits = plan_splits(B * H, kv_len, block)
    chunk = -(-kv_len // (splits * block)) * block
    out = torch.empty(B, H, 1, D, device=q.device, dtype=q.dtype)
    parts = B * H * splits
    pm = torch.empty(parts, device=q.device, dtype=torch.float32)
    pl, pa = torch.empty_like(pm), torch.empty(parts, D, device=q.device, dtype=torch.float32)
    ks = k_scale if fp8 else pm  # unused without fp8
    vs = v_scale if fp8 else pm
    attend[(B * H, splits)](q, k, v, ks, vs, lengths, out, pm, pl, pa, D ** -0.5, chunk,
                            q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
                            ks.stride(0) if fp8 else 0, ks.stride(1) if fp8 else 0, out.stride(0), out.stride(1),
                            HEADS=H, D=D, BLOCK=block, FP8=fp8, SPLITS=splits, num_warps=NUM_WARPS)
    if splits > 1:
        combine[(B * H,)](pm, pl, pa, out, out.stride(0), out.stride(1), HEADS=H, D=D, SPLITS=splits, num_warps=4)
    return out
