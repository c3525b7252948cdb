"""Model configuration read from the official DeepSeek-OCR `config.json` schema.

The official file is nested (`language_config`, `vision_config.width.{sam_vit_b,clip-l-14-224}`,
`projector_config`) but the reference `DeepseekOCRConfig(DeepseekV2Config)` builds the decoder from the
duplicated *top-level* keys; keys missing there take DeepseekV2Config defaults (ARCHITECTURE.md §4).
Encoder hyper-parameters without a schema field (SAM image 1024, patch 16, window 14, neck 256, CLIP
FFN 4x) are fixed constants here, as in the reference code.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _pick(cls, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names and v is not None}


@dataclass(frozen=True)
class SamConfig:
    width: int = 768
    layers: int = 12
    heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    downsample_channels: tuple[int, ...] = (512, 1024)
    # Not in the schema: fixed by the reference code.
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    neck_channels: int = 256
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class ClipConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    image_size: int = 224
    patch_size: int = 14

    @property
    def num_positions(self) -> int:  # 16x16 patches + CLS = 257 for CLIP-L/14 at 224
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 129280
    hidden_size: int = 1280
    intermediate_size: int = 6848
    moe_intermediate_size: int = 896
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    num_experts_per_tok: int = 6
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False
    scoring_func: str = "softmax"
    topk_method: str = "greedy"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    bos_token_id: int = 0
    eos_token_id: int = 1
    use_mla: bool = False
    sliding_window: int | None = None  # R-SWA window over generated tokens (Unlimited-OCR: 128); None: full

    def __post_init__(self) -> None:
        if self.use_mla:
            raise ValueError("DeepSeek-OCR uses plain multi-head attention; use_mla=True is not supported")
        if self.scoring_func != "softmax" or self.topk_method != "greedy":
            raise ValueError(f"unsupported router {self.scoring_func}/{self.topk_method}")
        if self.num_key_value_heads != self.num_attention_heads:
            raise ValueError("DeepSeek-OCR decoder is MHA: num_key_value_heads must equal num_attention_heads")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive window, got {self.sliding_window}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, i: int) -> bool:
        return i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0


def vision_widths(d: dict[str, Any]) -> dict[str, Any]:
    """`vision_config.width`: the per-encoder hyper-parameter blocks of the official schema."""
    return (d.get("vision_config") or {}).get("width") or {}


def sam_config(widths: dict[str, Any], **override: Any) -> SamConfig:
    sam = dict(widths.get("sam_vit_b") or {})
    for k in ("global_attn_indexes", "downsample_channels"):
        if k in sam:
            sam[k] = tuple(sam[k])
    return SamConfig(**{**_pick(SamConfig, sam), **override})


def projector_input_dim(d: dict[str, Any], decoder: DecoderConfig, default: int) -> int:
    proj = d.get("projector_config") or {}
    if proj.get("projector_type", "linear") != "linear":
        raise ValueError(f"unsupported projector_type {proj.get('projector_type')!r}")
    if proj.get("n_embed", decoder.hidden_size) != decoder.hidden_size:
        raise ValueError("projector n_embed must equal the decoder hidden_size")
    return proj.get("input_dim", default)


def decoder_config(d: dict[str, Any]) -> DecoderConfig:
    """The decoder from the duplicated top-level keys; Unlimited-OCR names its window `sliding_window` (top
    level) or `sliding_window_size` (language_config)."""
    fields = _pick(DecoderConfig, d)
    window = d.get("sliding_window", d.get("sliding_window_size", (d.get("language_config") or {}).get("sliding_window_size")))
    if window is not None:
        fields["sliding_window"] = int(window)
    return DecoderConfig(**fields)


@dataclass(frozen=True)
class OCRConfig:
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    projector_input_dim: int = 2048
    image_token_id: int | None = None  # None: ask the tokenizer, else 128815
    torch_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.sam.downsample_channels[-1] != self.clip.width:
            raise ValueError("SAM output channels must equal the CLIP width (SAM features are CLIP's patch embeddings)")
        if self.projector_input_dim != self.clip.width + self.sam.downsample_channels[-1]:
            raise ValueError("projector input must be CLIP width + SAM channels")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OCRConfig":
        widths = vision_widths(d)
        clip = dict(widths.get("clip-l-14-224") or {})
        decoder_cfg = decoder_config(d)
        return cls(
            decoder=decoder_cfg,
            sam=sam_config(widths),
            clip=ClipConfig(**_pick(ClipConfig, clip)),
            projector_input_dim=projector_input_dim(d, decoder_cfg, 2048),
            image_token_id=d.get("image_token_id"),
            torch_dtype=d.get("torch_dtype", "bfloat16"),
        )

    @classmethod
    def load(cls, path_or_dict: str | Path | dict[str, Any]) -> "OCRConfig":
        if isinstance(path_or_dict, dict):
            return cls.from_dict(path_or_dict)
        p = Path(path_or_dict)
        if p.is_dir():
            p = p / "config.json"
        with open(p, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@dataclass(frozen=True)
class QueryEncoderConfig:
    """DeepSeek-OCR-2's Qwen2-0.5B-style encoder. The hub config names only its width
    (`vision_config.width.qwen2-0-5b.dim`); the rest is fixed in the reference code. Tiny test checkpoints
    write the other fields in the same block."""

    dim: int = 896
    layers: int = 24
    heads: int = 14
    kv_heads: int = 2
    intermediate_size: int = 4864
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass(frozen=True)
class OCR2Config:
    """DeepSeek-OCR-2: SAM (its last conv widened to the encoder's width) -> query encoder -> projector."""

    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    sam: SamConfig = field(default_factory=lambda: SamConfig(downsample_channels=(512, 896)))
    encoder: QueryEncoderConfig = field(default_factory=QueryEncoderConfig)
    projector_input_dim: int = 896
    image_token_id: int | None = None
    torch_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.sam.downsample_channels[-1] != self.encoder.dim:
            raise ValueError("SAM output channels must equal the query encoder width")
        if self.projector_input_dim != self.encoder.dim:
            raise ValueError("projector input must be the query encoder width")
        if self.encoder.heads % self.encoder.kv_heads:
            raise ValueError("query encoder heads must be a multiple of its key/value heads")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OCR2Config":
        widths = vision_widths(d)
        encoder = QueryEncoderConfig(**_pick(QueryEncoderConfig, dict(widths.get("qwen2-0-5b") or {})))
        sam = dict(widths.get("sam_vit_b") or {})
        # The hub file keeps v1's stale downsample_channels [512, 1024]; the real last conv has the encoder's width.
        first = (sam.get("downsample_channels") or [512])[0]
        decoder_cfg = decoder_config(d)
        return cls(
            decoder=decoder_cfg,
            sam=sam_config(widths, downsample_channels=(first, encoder.dim)),
            encoder=encoder,
            projector_input_dim=projector_input_dim(d, decoder_cfg, encoder.dim),
            image_token_id=d.get("image_token_id"),
            torch_dtype=d.get("torch_dtype", "bfloat16"),
        )
