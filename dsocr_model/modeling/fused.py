"""Fused decoder pieces for CUDA (Triton kernels in fused_kernels.py): residual add + RMSNorm, RoPE, and the MoE's
routing and few-token expert path, each one launch where the eager code takes several.

Why: a batch-1 decode step is bound by kernel launches, not by its weights: 777 kernels, 2.09 ms of kernel time
for ≈ 1.2 GB of weights that HBM reads in ≈ 0.25 ms (benchmarks/RESULTS.md). RMSNorm was 7 kernels, RoPE 5 per
tensor, routing 6 and the gathered experts ≈ 12 (with a copy of the chosen experts' weights). The kernels keep
eager's bf16 roundings (fused_kernels.py), so only fp32 summation order differs. Each function is used only where
`enabled(x)`: CUDA tensors with Triton installed; the CPU (and the golden tests) keep the eager code.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

ENABLED = True  # benchmarks switch it off to time the eager pieces
# Launch settings of the few-token MoE kernels, (block, block, warps): each the fastest of a sweep on an H200
# (`benchmarks/step_profile.py --rows 1 --sweep-moe`, benchmarks/RESULTS.md); batch-1 step 1.432 ms at the first
# values (64, 64, 4), (16, 128, 4), (32, 128, 4).
ROUTE = (64, 512, 8)  # (experts' block: at least E, hidden block, warps)
EXPERT_UP = (8, 128, 4)  # (hidden units, input block, warps)
EXPERT_DOWN = (16, 128, 4)  # (output channels, hidden block, warps)


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    from . import fused_kernels  # Triton, on first use

    return fused_kernels


def triton_runs_on(device: torch.device | str) -> bool:
    """Whether our Triton kernels can run on `device`: CUDA, with Triton installed (CPU torch comes without it)."""
    return torch.device(device).type == "cuda" and triton_installed()


def enabled(x: torch.Tensor) -> bool:
    return ENABLED and triton_runs_on(x.device)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] (+ residual, rounded) -> (RMSNorm of the sum, the sum): decoder.RMSNorm's roundings."""
    D = x.shape[-1]
    rows = x.numel() // D
    x = x.contiguous()
    y = torch.empty_like(x)
    total = torch.empty_like(x) if residual is not None else x
    _kernels().add_rms_norm[(rows,)](x, residual.contiguous() if residual is not None else x, weight, y, total, eps,
                                     D=D, BLOCK=triton_block(D), HAS_RES=residual is not None, num_warps=4)
    return y, total


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, hd] (heads contiguous), cos/sin [B, 1, T, hd] -> rotated [B, T, heads, hd] (decoder.apply_rope)."""
    B, T, heads, hd = x.shape
    if x.stride(3) != 1 or x.stride(2) != hd:
        x = x.contiguous()
    out = torch.empty(B, T, heads, hd, device=x.device, dtype=x.dtype)
    cos, sin = cos.expand(B, 1, T, hd), sin.expand(B, 1, T, hd)
    if cos.stride(3) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    _kernels().rope[(B * T, heads)](x, cos, sin, out, T, x.stride(0), x.stride(1), cos.stride(0), cos.stride(2),
                                    HEADS=heads, HALF=hd // 2, num_warps=1)
    return out


def route(x: torch.Tensor, gate_weight: torch.Tensor, top_k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, D] -> (weights [T, k] fp32, expert ids [T, k] int64), as moe.route: fp32 logits and softmax, top k."""
    T, D = x.shape
    E = gate_weight.shape[0]
    weight = torch.empty(T, top_k, device=x.device, dtype=torch.float32)
    idx = torch.empty(T, top_k, device=x.device, dtype=torch.int64)
    e_block, d_block, warps = ROUTE
    _kernels().route[(T,)](x.contiguous(), gate_weight, weight, idx, scale, E=E, D=D, TOP_K=top_k,
                           E_BLOCK=max(e_block, triton_block(E)), BLOCK_D=d_block, num_warps=warps)
    return weight, idx


def few_token_experts(x: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                      shared: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x [T, D], routing weights/ids [T, k], stacked experts w13 [E, 2I, D], w2 [E, D, I], and optionally the shared
    experts' (gate [S*I, D], up [S*I, D], down [D, S*I]) -> the weighted sum of each token's k experts [T, D] in x's
    dtype, plus the shared experts' output (MoE.forward's gathered path, without copying the weights): up and
    activation per assignment, down per assignment, then the sum. The shared experts run as S more assignments per
    token, each an I-wide slice, in the same two launches (as their own MLP they were six kernels a layer)."""
    T, k = idx.shape
    D, I = x.shape[1], w2.shape[2]
    slices = 0
    if shared is not None:
        gate, up, down = shared
        if gate.shape[0] % I:
            raise ValueError(f"the shared experts' width {gate.shape[0]} is not a multiple of the experts' {I}")
        slices = gate.shape[0] // I
    else:
        gate, up, down = w13, w13, w2  # never read: every assignment is routed
    kernels = _kernels()
    n_routed, n = T * k, T * (k + slices)
    hidden = torch.empty(n, I, device=x.device, dtype=x.dtype)
    (up_i, up_d, up_warps), (down_o, down_i, down_warps) = EXPERT_UP, EXPERT_DOWN
    kernels.expert_up[(n, -(-I // up_i))](x.contiguous(), idx, w13, gate, up, hidden, n_routed, D=D, I=I, TOP_K=k,
                                          SHARED=max(slices, 1), BLOCK_I=up_i, BLOCK_D=up_d, num_warps=up_warps)
    part = torch.empty(n, D, device=x.device, dtype=torch.float32)
    kernels.expert_down[(n, -(-D // down_o))](hidden, idx, weight, w2, down, part, n_routed, D=D, I=I,
                                              SHARED=max(slices, 1), BLOCK_O=down_o, BLOCK_I=down_i,
                                              num_warps=down_warps)
    y = torch.empty(T, D, device=x.device, dtype=x.dtype)
    kernels.combine_experts[(T, -(-D // 256))](part, y, n_routed, D=D, TOP_K=k, SHARED=slices, BLOCK=256, num_warps=4)
    return y


def triton_block(n: int) -> int:
    """The power of two a Triton block needs to cover n."""
    return max(16, 1 << (n - 1).bit_length())
