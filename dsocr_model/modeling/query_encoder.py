"""DeepSeek-OCR-2's vision encoder: a Qwen2-style transformer reading SAM tokens plus learned queries
(`model.qwen2_model.*`; FAMILY.md §2.3).

A view's N SAM tokens (256 for the 1024 global view, 144 for a 768 tile) are followed by N learned
queries (`query_1024` / `query_768`). One pass with the causal-flow mask — image tokens see each other
both ways, queries see every image token and the queries before them — and only the query half is kept:
N tokens per view, in the query table's order. Layers are Qwen2's: GQA with q/k/v bias, rotate-half RoPE
over positions 0..2N-1 (theta 1e6), SwiGLU, RMSNorm, a final norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import QueryEncoderConfig
from .decoder import RMSNorm, apply_rope, rope_cos_sin
from .moe import MLP

QUERY_TABLES = {256: "query_1024", 144: "query_768"}  # SAM tokens per view -> its query table


def causal_flow_mask(num_image: int, num_query: int, device=None) -> torch.Tensor:
    """bool [N + Q, N + Q], True where row i may attend to column j: causal, plus image<->image both ways."""
    n = num_image + num_query
    idx = torch.arange(n, device=device)
    causal = idx[None, :] <= idx[:, None]
    image = idx < num_image
    return causal | (image[:, None] & image[None, :])


class Attention(nn.Module):
    def __init__(self, cfg: QueryEncoderConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = self.heads // self.kv_heads  # each key/value head serves `group` consecutive query heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: QueryEncoderConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg.dim, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Stack(nn.Module):
    """`qwen2_model.model.model`: the layers and the final norm."""

    def __init__(self, cfg: QueryEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.rms_norm_eps)


class Wrapper(nn.Module):
    """`qwen2_model.model`: the reference wraps a Qwen2 model, hence the doubled `model.model` in the keys."""

    def __init__(self, cfg: QueryEncoderConfig) -> None:
        super().__init__()
        self.model = Stack(cfg)


class QueryEncoder(nn.Module):
    """SAM tokens [B, N, C] (N = 256 or 144) -> query outputs [B, N, C]."""

    def __init__(self, cfg: QueryEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Wrapper(cfg)
        self.query_768 = nn.Embedding(144, cfg.dim)
        self.query_1024 = nn.Embedding(256, cfg.dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, N, C = tokens.shape
        if N not in QUERY_TABLES:  # the reference has no queries for other view sizes
            raise ValueError(f"DeepSeek-OCR-2 reads views of 1024 (256 tokens) or 768 (144 tokens), got {N} tokens")
        queries = getattr(self, QUERY_TABLES[N]).weight.to(tokens.dtype)
        x = torch.cat([tokens, queries[None].expand(B, N, C)], dim=1)  # (B, 2N, C)
        positions = torch.arange(2 * N, device=x.device)[None]
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        mask = causal_flow_mask(N, N, x.device)
        stack = self.model.model
        for layer in stack.layers:
            x = layer(x, cos, sin, mask)
        return stack.norm(x)[:, N:]
