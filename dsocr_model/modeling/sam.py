"""SAM ViT-B image encoder + DeepSeek's 16x token compressor (`model.sam_model.*`).

Follows segment-anything `modeling/image_encoder.py` (ViTDet-style windowing, MViTv2 decomposed
relative positions) as used by DeepSeek-OCR `deepencoder/sam_vary_sdpa.py`, with these DeepSeek
details (ARCHITECTURE.md §3.1): attention through SDPA with the rel-pos bias as `attn_mask`,
bicubic+antialias resizing of `pos_embed` for inputs other than 1024², and `net_2`/`net_3` stride-2
convs after the neck. Tokens stay channels-last [B, H, W, C] inside the trunk.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamConfig


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> [B * nWin, ws, ws, C], zero-padding bottom/right to a multiple of ws.

    Padded tokens are not masked: they take part in attention, as in SAM.
    """
    B, H, W, C = x.shape
    pad_h, pad_w = (ws - H % ws) % ws, (ws - W % ws) % ws
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C), (Hp, Wp)  # (B*nh*nw, ws, ws, C)


def window_unpartition(windows: torch.Tensor, ws: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """[B * nWin, ws, ws, C] -> [B, H, W, C], dropping the padding."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // ((Hp // ws) * (Wp // ws))
    x = windows.view(B, Hp // ws, Wp // ws, ws, ws, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)  # (B, Hp, Wp, C)
    return x[:, :H, :W, :]


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation of a [L, C] relative-position table to [length, C], in fp32."""
    if table.shape[0] == length:
        return table
    t = table.float().t()[None]  # (1, C, L)
    return F.interpolate(t, size=length, mode="linear")[0].t().to(table.dtype)


def rel_pos_lookup(table: torch.Tensor, n: int) -> torch.Tensor:
    """R[q, k] = table[q - k + n - 1] for a square q/k grid side n -> [n, n, C]."""
    table = resize_rel_pos(table, 2 * n - 1)
    idx = torch.arange(n, device=table.device)
    return table[idx[:, None] - idx[None, :] + (n - 1)]


def rel_pos_bias(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Decomposed rel-pos bias from the *unscaled* q [B, H*W, C] -> additive mask [B, H*W, H*W]."""
    H, W = hw
    B, _, C = q.shape
    Rh, Rw = rel_pos_lookup(rel_h, H), rel_pos_lookup(rel_w, W)  # (H, H, C), (W, W, C)
    r_q = q.reshape(B, H, W, C)
    bh = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)  # (B, H, W, kH)
    bw = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)  # (B, H, W, kW)
    bias = bh.reshape(B, H * W, H, 1) + bw.reshape(B, H * W, 1, W)
    return bias.reshape(B, H * W, H * W)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rel_len: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_len - 1, dim // heads))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_len - 1, dim // heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        nh = self.heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)  # (3, B, nh, HW, hd)
        q, k, v = qkv.unbind(0)
        bias = rel_pos_bias(q.reshape(B * nh, H * W, -1), self.rel_pos_h, self.rel_pos_w, (H, W))
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(B, nh, H * W, H * W))
        x = x.view(B, nh, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        return self.proj(x)


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))  # exact erf GELU


class Block(nn.Module):
    def __init__(self, cfg: SamConfig, window_size: int) -> None:
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.window_size = window_size  # 0 = global attention
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = Attention(cfg.width, cfg.heads, window_size or grid)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = MLPBlock(cfg.width, int(cfg.width * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size:  # pad after norm1, as the reference does
            hw = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of an NCHW map (mean/var per pixel)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # B C H W -> B H W C


def resize_abs_pos(pos: torch.Tensor, side: int) -> torch.Tensor:
    """[1, G, G, C] -> [1, side, side, C]: bicubic, antialiased, in fp32 (trained at 64x64 = 1024²)."""
    if pos.shape[1] == side:
        return pos
    p = pos.permute(0, 3, 1, 2).float()
    p = F.interpolate(p, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return p.to(pos.dtype).permute(0, 2, 3, 1)


class SamEncoder(nn.Module):
    """Pixels [B, 3, S, S] -> compressed features [B, C_out, S/64, S/64] (1024² -> 16x16x1024)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.width))
        globals_ = set(cfg.global_attn_indexes)
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in globals_ else cfg.window_size) for i in range(cfg.layers)
        )
        c = cfg.neck_channels
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.width, c, kernel_size=1, bias=False),
            LayerNorm2d(c),
            nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(c),
        )
        c2, c3 = cfg.downsample_channels
        self.net_2 = nn.Conv2d(c, c2, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = nn.Conv2d(c2, c3, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, S/16, S/16, width)
        x = x + resize_abs_pos(self.pos_embed, x.shape[1])
        for blk in self.blocks:
            x = blk(x)
        x = self.neck(x.permute(0, 3, 1, 2))  # (B, 256, S/16, S/16)
        return self.net_3(self.net_2(x))  # (B, C_out, S/64, S/64)
