"""SAM ViT-B image encoder + DeepSeek's 16x token compressor (`model.sam_model.*`).

Follows segment-anything `modeling/image_encoder.py` (ViTDet-style windowing, MViTv2 decomposed
relative positions) as used by DeepSeek-OCR `deepencoder/sam_vary_sdpa.py`, with these DeepSeek
details (ARCHITECTURE.md §3.1): attention with the rel-pos bias added to the scores (the reference passes
it to SDPA as `attn_mask`; on CUDA our kernel adds it inside its softmax loop and cuts the windows itself,
sam_attention.py; elsewhere we fold it into q and k, `fold_rel_pos`, so SDPA needs no mask),
bicubic+antialias resizing of `pos_embed` for inputs other than 1024², and `net_2`/`net_3` stride-2
convs after the neck. Tokens stay channels-last [B, H, W, C] inside the trunk.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamConfig
from .sam_attention import rel_pos_attention, runs_on


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


def rel_pos_lookup(table: torch.Tensor, n: int, window: int | None = None) -> torch.Tensor:
    """R[g, k] = table[g % window - k + window - 1] for grid cells g < n and window cells k -> [n, window, C]: each
    cell's query at its place in its window. Without a window (global attention, or a grid that is one window)
    it is R[q, k] = table[q - k + n - 1], [n, n, C]."""
    window = window or n
    table = resize_rel_pos(table, 2 * window - 1)
    cell, key = torch.arange(n, device=table.device) % window, torch.arange(window, device=table.device)
    return table[cell[:, None] - key[None, :] + (window - 1)]


def rel_pos_terms(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                  hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed rel-pos bias's two factors from the *unscaled* q [B, H*W, C]: the bias of query q on key
    (kh, kw) is bh[q, kh] + bw[q, kw]. -> bh [B, H*W, H], bw [B, H*W, W]."""
    H, W = hw
    B, _, C = q.shape
    Rh, Rw = rel_pos_lookup(rel_h, H), rel_pos_lookup(rel_w, W)  # (H, H, C), (W, W, C)
    r_q = q.reshape(B, H, W, C)
    bh = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)  # (B, H, W, kH)
    bw = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)  # (B, H, W, kW)
    return bh.reshape(B, H * W, H), bw.reshape(B, H * W, W)


def rel_pos_factors(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                    window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two factors in the layout sam_attention's kernel reads, from the *unscaled* q [B, H, W, heads, C]
    over the unpartitioned grid (any strides: the qkv projection's output, not copied out); window 0 = global.
    -> bh [B, H, W, heads, >= win_h], bw [B, H, W, heads, >= win_w]: query (y, x) on its window's key row / column
    (window cells past `win` are zero padding)."""
    H, W = q.shape[1], q.shape[2]
    # window cells padded to a multiple of 8 (zero rows, never read): a 14-wide GEMM output ran on a slow
    # unaligned kernel (H200 profile); the kernel reads columns < win only
    Rh, Rw = (F.pad(rel_pos_lookup(t, n, window), (0, 0, 0, -(window or n) % 8))
              for t, n in ((rel_h, H), (rel_w, W)))  # (H, win_h+, C), (W, win_w+, C)
    return torch.einsum("brcnd,rkd->brcnk", q, Rh), torch.einsum("brcnd,ckd->brcnk", q, Rw)


def fold_rel_pos(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor,
                 hw: tuple[int, int], scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold the rel-pos bias into q and k so attention needs no mask, and a flash kernel can run it.

    q [B, nh, N, hd], bh [B, nh, N, H], bw [B, nh, N, W] -> q' = [q, bh/scale, bw/scale] and k' = [k, one-hot of
    the key's row, one-hot of its column], so scale * q'.k' = scale * q.k + bh[q, k_row] + bw[q, k_col]: the
    reference's scores, without a [N, N] bias in memory. Head dims are zero-padded to a multiple of 8, v too
    (flash kernels want q, k and v alike); the output's first hd channels are the attention's.
    """
    H, W = hw
    B, nh, N, hd = q.shape
    cells = torch.arange(N, device=q.device)
    onehot = torch.cat([F.one_hot(cells // W, H), F.one_hot(cells % W, W)], dim=-1).to(k.dtype)  # (N, H+W)
    pad = -(hd + H + W) % 8
    q2 = F.pad(torch.cat([q, bh / scale, bw / scale], dim=-1), (0, pad))
    k2 = F.pad(torch.cat([k, onehot.expand(B, nh, N, H + W)], dim=-1), (0, pad))
    v2 = F.pad(v, (0, H + W + pad))
    return q2, k2, v2


class Attention(nn.Module):
    kernel = True  # on CUDA with Triton: the fused kernel (sam_attention.py); else SDPA, as `fold` says
    fold = True  # False: the reference's materialised bias (benchmarks time all three)

    def __init__(self, dim: int, heads: int, rel_len: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_len - 1, dim // heads))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_len - 1, dim // heads))

    def fused(self, x: torch.Tensor) -> bool:
        """Whether forward runs our kernel on x: windows are then cut inside it, with no copies."""
        return self.kernel and runs_on(x)

    def forward(self, x: torch.Tensor, fold: bool | None = None, window: int = 0) -> torch.Tensor:
        """x [B, H, W, C] -> [B, H, W, C], each token attending over its window (0: the whole grid; the kernel only,
        SDPA paths take windows already cut); `fold` (True or False) forces an SDPA path (tests compare them)."""
        B, H, W, C = x.shape
        nh, hd = self.heads, C // self.heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, hd)
        if fold is None and self.fused(x):
            bh, bw = rel_pos_factors(qkv[:, :, 0].view(B, H, W, nh, hd), self.rel_pos_h, self.rel_pos_w, window)
            out = rel_pos_attention(qkv, self.qkv.bias, bh, bw, (H, W), window, hd ** -0.5)
            return self.proj(out.view(B, H, W, C))
        if window:
            raise ValueError("SDPA attention takes windows cut by window_partition (window=0)")
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, HW, hd) each
        bh, bw = rel_pos_terms(q.reshape(B * nh, H * W, hd), self.rel_pos_h, self.rel_pos_w, (H, W))
        bh, bw = bh.view(B, nh, H * W, H), bw.view(B, nh, H * W, W)
        if self.fold if fold is None else fold:
            scale = hd ** -0.5
            q2, k2, v2 = fold_rel_pos(q, k, v, bh, bw, (H, W), scale)
            x = F.scaled_dot_product_attention(q2, k2, v2, scale=scale)[..., :hd]
        else:  # the reference's way: the bias materialised as attn_mask
            bias = (bh[..., None] + bw[..., None, :]).view(B, nh, H * W, H * W)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.reshape(B, nh, H, W, hd).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
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
        if self.window_size and not self.attn.fused(x):  # pad after norm1, as the reference does
            hw = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, hw)
        else:
            x = self.attn(x, window=self.window_size)
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
    """A 16x16, stride-16 conv (`proj`, as the checkpoint holds it), computed as one GEMM over the flattened patches:
    the same sums, channels-last straight away (cuDNN runs the conv as a slow implicit GEMM for 3 input channels:
    4.1 ms for 16 views of 1024² on an H200, benchmarks/RESULTS.md)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, S, S2 = x.shape
        p = self.proj.kernel_size[0]
        g = S // p
        if S % p or S2 != S:  # views are square multiples of 16; anything else as the conv does it
            return self.proj(x).permute(0, 2, 3, 1)
        patches = x.view(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g, g, C * p * p)  # (c, i, j) order
        return F.linear(patches, self.proj.weight.view(self.proj.out_channels, -1), self.proj.bias)  # (B, g, g, width)


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
