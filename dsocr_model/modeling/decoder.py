"""DeepSeek3B-MoE decoder pieces (`model.layers.*`, `model.norm`): MHA + RoPE, RMSNorm, KV cache.

Follows the reference `modeling_deepseekv2.py` with `use_mla=False`, where attention is transformers'
LlamaAttention (ARCHITECTURE.md §4): q/k/v/o without bias, rotate-half RoPE over the full head,
theta 1e4, positions 0..L-1 over the whole sequence (image tokens included). Layer 0 has a dense
SwiGLU; the others a MoE (moe.py). The cache is preallocated and written at explicit slots (gpt-fast);
it never advances itself. A slot is the token's position, except under R-SWA (Unlimited-OCR), where
generated tokens go round a ring after the prompt (`ring_slot`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .config import DecoderConfig
from .decode_attention import FP8, decode_attention, dequantize, quantize
from .moe import MLP, MoE


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.enabled(x) and x.dtype == self.weight.dtype:
            return fused.add_rms_norm(x, None, self.weight, self.eps)[0]
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)  # normalise in fp32, scale in the input dtype

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual): one kernel on CUDA."""
        if fused.enabled(x) and x.dtype == self.weight.dtype == residual.dtype:
            return fused.add_rms_norm(x, residual, self.weight, self.eps)
        x = x + residual
        return self(x), x


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, 1, T, head_dim]; angles in fp32, computed per call (no buffers)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin  # rotate-half (NeoX) layout


def rotate_heads(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, hd] (a projection's output) -> RoPE'd [B, H, T, hd]; one kernel on CUDA."""
    if fused.enabled(x):
        return fused.rope(x, cos, sin).transpose(1, 2)
    return apply_rope(x.transpose(1, 2), cos, sin)


@dataclass
class RowLengths:
    """A decode step's attention plan for the ragged kernel: each row sees its slots 0..lengths-1 [B] (int32);
    kv_len bounds them (it sizes the kernel's work split)."""

    lengths: torch.Tensor
    kv_len: int


class KVCache:
    """Static cache k, v: [layers, B, H, S_max, hd]; rows written at explicit slots.

    `spare_slot` adds one slot past `max_len` to every row: a batched decode step sends the rows it carries but
    does not use there (a row may be filling from another CUDA stream meanwhile), and attention never reads it.
    `kv_dtype="fp8"` stores each key and value vector as e4m3 with an fp32 scale (decode_attention.quantize);
    `ragged` (implied by fp8) has one-token decode steps attend over each row's own length with the Triton
    kernel instead of SDPA over a shared, masked length.
    """

    def __init__(self, cfg: DecoderConfig, batch: int, max_len: int, device, dtype: torch.dtype,
                 spare_slot: bool = False, kv_dtype: str | None = None, ragged: bool = False) -> None:
        if kv_dtype not in (None, FP8):
            raise ValueError(f"kv_dtype must be None (the model's dtype) or {FP8!r}, got {kv_dtype!r}")
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len + int(spare_slot), cfg.head_dim)
        fp8 = kv_dtype == FP8
        store = torch.float8_e4m3fn if fp8 else dtype
        self.k = torch.zeros(shape, device=device, dtype=store)
        self.v = torch.zeros(shape, device=device, dtype=store)
        self.k_scale = torch.zeros(shape[:-1], device=device, dtype=torch.float32) if fp8 else None
        self.v_scale = torch.zeros(shape[:-1], device=device, dtype=torch.float32) if fp8 else None
        self.dtype = dtype  # what attention computes in
        self.ragged = ragged or fp8
        self.length = max_len
        self.row_index: torch.Tensor | None = None  # set by `at_rows`: the batch rows a prefill writes

    @property
    def max_len(self) -> int:
        """Slots attention may read (the spare slot, if any, lies past them)."""
        return self.length

    @property
    def spare(self) -> int:
        """The slot idle rows write to (only meaningful with spare_slot=True)."""
        return self.length

    def update(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write k, v [B, H, T, hd] at cache slots [B, T]."""
        rows = torch.arange(k.shape[0], device=k.device)[:, None] if self.row_index is None else self.row_index[:, None]
        if self.k_scale is not None:
            (k, ks), (v, vs) = quantize(k), quantize(v)
            self.k_scale[layer][rows, :, slots] = ks.transpose(1, 2)  # (B, T, H)
            self.v_scale[layer][rows, :, slots] = vs.transpose(1, 2)
        self.k[layer][rows, :, slots] = k.transpose(1, 2)  # index (B, T) on dims 0, 2 -> (B, T, H, hd)
        self.v[layer][rows, :, slots] = v.transpose(1, 2)

    def read(self, layer: int, kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots 0..kv_len of every row, in the compute dtype (an fp8 cache is dequantized: the slow path)."""
        scales = (None, None) if self.k_scale is None else (self.k_scale[layer][:, :, :kv_len],
                                                           self.v_scale[layer][:, :, :kv_len])
        return (dequantize(self.k[layer][:, :, :kv_len], scales[0], self.dtype),
                dequantize(self.v[layer][:, :, :kv_len], scales[1], self.dtype))

    def attend(self, layer: int, q: torch.Tensor, plan: RowLengths) -> torch.Tensor:
        """q [B, H, 1, hd] over each row's own slots (the ragged kernel)."""
        scales = (None, None) if self.k_scale is None else (self.k_scale[layer], self.v_scale[layer])
        return decode_attention(q, self.k[layer], self.v[layer], plan.lengths, plan.kv_len, *scales)

    def _view(self, rows: slice | None = None, row_index: torch.Tensor | None = None) -> "KVCache":
        view = KVCache.__new__(KVCache)
        view.__dict__.update(self.__dict__)
        view.row_index = row_index
        if rows is not None:
            for name in ("k", "v", "k_scale", "v_scale"):
                t = getattr(self, name)
                setattr(view, name, None if t is None else t[:, rows])
        return view

    def rows(self, start: int, stop: int) -> "KVCache":
        """A view of batch rows start..stop (shares storage)."""
        return self._view(slice(start, stop))

    def slot(self, row: int) -> "KVCache":
        """One row: prefill one request into its batch slot."""
        return self.rows(row, row + 1)

    def at_rows(self, rows: torch.Tensor) -> "KVCache":
        """A write-only view for a prefill of fresh sequences: batch item i goes to cache row rows[i] (any rows,
        in any order). Its attention is causal over the sequences' own keys, so the cache is never read."""
        return self._view(row_index=rows)

    def prefix(self, n: int) -> "KVCache":
        """Rows 0..n: decode only the rows that can be live."""
        return self.rows(0, n)


def cache_mask(visible: torch.Tensor, kv_len: int) -> torch.Tensor:
    """A query whose last visible slot is v sees cache slots 0..v: [B, T] -> bool [B, 1, T, kv_len].
    With full attention v is the query's position (causal)."""
    slots = torch.arange(kv_len, device=visible.device)
    return (slots[None, None, :] <= visible[:, :, None])[:, None]


def ring_slot(position: int, prefill_len: int, window: int | None) -> tuple[int, int]:
    """R-SWA cache addressing of one token: (slot its K/V is written to, last slot its query sees).

    The prompt (positions < prefill_len) sits in slots 0..prefill_len-1 and is attended causally. Generated
    tokens go round a ring of `window` slots after it, so a page's cache is bounded by prefill_len + window:
    the token at position p >= prefill_len writes slot prefill_len + (p - prefill_len) % window and sees the
    whole prompt plus the ring's filled slots, i.e. the last `window` generated tokens, itself included
    (FAMILY.md §3.4). Order inside the ring does not matter: keys carry their absolute RoPE position.
    Without a window the slot is the position and attention is causal.
    """
    if window is None or position < prefill_len:
        return position, position
    return prefill_len + (position - prefill_len) % window, min(position, prefill_len + window - 1)


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                cache: KVCache | None, slots: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q = rotate_heads(self.q_proj(x).view(B, T, self.heads, self.head_dim), cos, sin)  # (B, H, T, hd)
        k = rotate_heads(self.k_proj(x).view(B, T, self.heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            cache.update(layer, slots, k, v)
        if mask is None:  # fresh sequences (no cache, or a prefill into empty rows): causal over their own keys
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask, RowLengths):  # one token per row, over the row's own length
            y = cache.attend(layer, q, mask)
        else:  # over the cache's slots 0..kv_len, as the mask allows
            k_all, v_all = cache.read(layer, mask.shape[-1])
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, D))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.self_attn = Attention(cfg)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(index) else MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, cache, slots, mask) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), cos, sin, self.index, cache, slots, mask)
        h, x = self.post_attention_layernorm.add_forward(h, x)  # the residual add and the norm, one kernel on CUDA
        return x + self.mlp(h)
