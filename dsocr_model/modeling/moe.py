"""DeepSeekMoE feed-forward of decoder layers 1..11, with vectorised expert dispatch.

Router (ARCHITECTURE.md §4): fp32 logits and softmax, plain top-k, weights used as is
(norm_topk_prob=False), times routed_scaling_factor; expert outputs are weighted in fp32, summed,
cast back, then the shared experts (one SwiGLU of width n_shared * 896) are added unweighted.

Routed experts are held stacked, as transformers 5 converts them: `experts.gate_up_proj` [E, 2I, D]
(gate rows, then up rows) and `experts.down_proj` [E, D, I]. The checkpoint's per-expert keys
(`mlp.experts.{e}.gate_proj.weight`, ...) are stacked once, at load, by `DeepseekOCR.sanitize`.
Dispatch sorts (token, expert) pairs by expert and runs two grouped GEMMs (`torch._grouped_mm`, CPU and
CUDA) — no Python loop over experts, no host sync. For a handful of assignments (batch-1 decode)
gathering the chosen experts' weights is cheaper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .config import DecoderConfig

GATHER_MAX_ASSIGNMENTS = 16  # below this many (token, expert) pairs, gather weights instead


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); used for layer 0, each expert and the shared experts."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def route(x: torch.Tensor, gate_weight: torch.Tensor, top_k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, D] -> (weights [T, k] fp32, expert ids [T, k]); logits and softmax in fp32."""
    scores = F.linear(x.float(), gate_weight.float()).softmax(dim=-1)  # (T, E)
    weight, idx = torch.topk(scores, top_k, dim=-1)
    return weight * scale, idx


def grouped_experts(x: torch.Tensor, idx: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Run each token through its k experts. x [T, D], idx [T, k] -> [T, k, D]."""
    T, k = idx.shape
    E = w13.shape[0]
    flat = idx.reshape(-1)  # (T*k,)
    order = flat.argsort(stable=True)  # assignments grouped by expert
    counts = torch.zeros(E, dtype=torch.int32, device=x.device).scatter_add_(
        0, flat, torch.ones_like(flat, dtype=torch.int32))  # scatter_add, not bincount: no host sync
    offs = counts.cumsum(0, dtype=torch.int32)
    xs = x[order // k]  # (T*k, D)
    h = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)  # (T*k, 2I)
    g, u = h.chunk(2, dim=-1)
    ys = torch._grouped_mm(F.silu(g) * u, w2.transpose(1, 2), offs=offs)  # (T*k, D)
    out = torch.empty_like(ys)
    out[order] = ys
    return out.view(T, k, -1)


def gathered_experts(x: torch.Tensor, idx: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Same as grouped_experts by gathering the chosen weights; cheap for a few tokens only."""
    T, k = idx.shape
    h = torch.einsum("td,tkod->tko", x, w13[idx])  # (T, k, 2I)
    g, u = h.chunk(2, dim=-1)
    return torch.einsum("tki,tkdi->tkd", F.silu(g) * u, w2[idx])  # (T, k, D)


class Experts(nn.Module):
    """The routed experts as two stacked tensors (see the module docstring for the checkpoint keys)."""

    def __init__(self, n: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(n, 2 * hidden, dim))  # (E, 2I, D)
        self.down_proj = nn.Parameter(torch.empty(n, dim, hidden))  # (E, D, I)
        # nn.Linear's default init, per expert: random-weight models (benchmarks, tests) stay well scaled
        nn.init.uniform_(self.gate_up_proj, -dim ** -0.5, dim ** -0.5)
        nn.init.uniform_(self.down_proj, -hidden ** -0.5, hidden ** -0.5)


class MoE(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        D, I = cfg.hidden_size, cfg.moe_intermediate_size
        self.top_k = cfg.num_experts_per_tok
        self.scale = cfg.routed_scaling_factor
        self.gate = nn.Linear(D, cfg.n_routed_experts, bias=False)
        self.experts = Experts(cfg.n_routed_experts, D, I)
        self.shared_experts = MLP(D, I * cfg.n_shared_experts) if cfg.n_shared_experts else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (T, D)
        few = x.shape[0] * self.top_k <= GATHER_MAX_ASSIGNMENTS
        if few and fused.enabled(x):  # batch-1 decode on CUDA: routing, routed and shared experts in four kernels
            weight, idx = fused.route(x, self.gate.weight, self.top_k, self.scale)
            mlp = self.shared_experts
            shared = None if mlp is None else (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
            y = fused.few_token_experts(x, weight, idx, self.experts.gate_up_proj, self.experts.down_proj, shared)
            return y.view(shape)
        weight, idx = route(x, self.gate.weight, self.top_k, self.scale)
        run = gathered_experts if few else grouped_experts
        y = (run(x, idx, self.experts.gate_up_proj, self.experts.down_proj).float()
             * weight.unsqueeze(-1)).sum(dim=1).to(x.dtype)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y.view(shape)


def expert_mlp(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e as the checkpoint writes it: down(silu(gate(x)) * up(x))."""
    gate, up = moe.experts.gate_up_proj[e].chunk(2, dim=0)
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), moe.experts.down_proj[e])


def moe_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Naive per-token, per-expert loop, one expert MLP at a time: the yardstick for tests."""
    x2 = x.reshape(-1, x.shape[-1])
    weight, idx = route(x2, moe.gate.weight, moe.top_k, moe.scale)
    rows = []
    for t in range(x2.shape[0]):
        acc = torch.zeros(x2.shape[1], dtype=torch.float32, device=x.device)
        for j in range(moe.top_k):
            acc += expert_mlp(moe, int(idx[t, j]), x2[t]).float() * weight[t, j]
        rows.append(acc.to(x.dtype))
    y = torch.stack(rows)
    if moe.shared_experts is not None:
        y = y + moe.shared_experts(x2)
    return y.view(x.shape)
