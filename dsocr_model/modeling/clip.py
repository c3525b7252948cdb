"""CLIP-L/14 trunk fed with SAM features instead of pixels (`model.vision_model.*`).

Follows DeepSeek-OCR `deepencoder/clip_sdpa.py` (ARCHITECTURE.md §3.2): the patch conv exists in the
checkpoint but is unused; SAM's [B, C, g, g] output, flattened row-major, is the patch embedding.
CLS is prepended, the 16x16 position grid is bicubic-resized to g x g, `pre_layrnorm` (sic) follows,
then pre-LN blocks with a fused qkv and quick_gelu. No post-layernorm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipConfig


def resize_pos_table(table: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """[1 + G*G, C] position table -> [1 + g*g, C]; row 0 (CLS) kept, grid bicubic+antialias in fp32."""
    src, tgt = int((table.shape[0] - 1) ** 0.5), int((n_tokens - 1) ** 0.5)
    if src == tgt:
        return table
    C = table.shape[1]
    grid = table[1:].view(1, src, src, C).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.to(table.dtype).permute(0, 2, 3, 1).reshape(tgt * tgt, C)
    return torch.cat([table[:1], grid], dim=0)


class Embeddings(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.width))
        # Kept only so the checkpoint loads strictly; SAM features replace its output.
        self.patch_embedding = nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.width)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        B = sam_features.shape[0]
        patches = sam_features.flatten(2).transpose(1, 2)  # (B, g*g, C)
        cls = self.class_embedding.to(patches.dtype).expand(B, 1, -1)
        x = torch.cat([cls, patches], dim=1)  # (B, 1 + g*g, C)
        return x + resize_pos_table(self.position_embedding.weight, x.shape[1])


class SelfAttention(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv_proj = nn.Linear(cfg.width, cfg.width * 3)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        qkv = self.qkv_proj(x).view(B, L, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, L, hd)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, C))


class MLP(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.width * 4)
        self.fc2 = nn.Linear(cfg.width * 4, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class Layer(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=1e-5)
        self.self_attn = SelfAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=1e-5)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))


class ClipEncoder(nn.Module):
    """SAM features [B, C, g, g] -> hidden states [B, 1 + g*g, C] (CLS at index 0)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=1e-5)
        self.transformer = Transformer(cfg)

    def forward(self, sam_features: torch.Tensor) -> torch.Tensor:
        x = self.pre_layrnorm(self.embeddings(sam_features))
        for layer in self.transformer.layers:
            x = layer(x)
        return x
