"""DeepseekOCR: DeepEncoder + DeepSeek3B-MoE decoder, loadable from the official checkpoint unchanged.

Module names equal checkpoint keys: `model.{sam_model, vision_model, projector, image_newline,
view_seperator, embed_tokens, layers, norm}` and `lm_head`. Image features are written, in order,
over the `<image>` placeholder positions of the token embeddings (reference `masked_scatter_`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .clip import ClipEncoder
from .config import OCRConfig
from .decoder import DecoderLayer, KVCache, RMSNorm, cache_mask, rope_cos_sin
from .generate import Generation, greedy_generate
from .moe import MoE
from .preprocess import ImageViews
from .sam import SamEncoder
from .tokenizer import build_prompt_ids, load_tokenizer, resolve_image_token_id, token_id
from .vision import Projector, encode_images
from .weights import DEFAULT_MODEL_ID, read_checkpoint, load_state, resolve_model_dir

logger = logging.getLogger(__name__)

KV_LEN_BUCKET = 128


class Backbone(nn.Module):
    """Everything under the checkpoint's `model.` prefix."""

    def __init__(self, cfg: OCRConfig) -> None:
        super().__init__()
        d = cfg.decoder
        self.sam_model = SamEncoder(cfg.sam)
        self.vision_model = ClipEncoder(cfg.clip)
        self.projector = Projector(cfg.projector_input_dim, d.hidden_size)
        self.image_newline = nn.Parameter(torch.zeros(d.hidden_size))
        self.view_seperator = nn.Parameter(torch.zeros(d.hidden_size))  # sic: the checkpoint's spelling
        self.embed_tokens = nn.Embedding(d.vocab_size, d.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(d, i) for i in range(d.num_hidden_layers))
        self.norm = RMSNorm(d.hidden_size, d.rms_norm_eps)


def _dtype(dtype: torch.dtype | str | None, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


class DeepseekOCR(nn.Module):
    def __init__(self, config: OCRConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.decoder.hidden_size, config.decoder.vocab_size, bias=False)
        self.tokenizer = None
        self.image_token_id = resolve_image_token_id(config.image_token_id, None)
        self.bos_token_id = config.decoder.bos_token_id
        self.eos_token_id = config.decoder.eos_token_id

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: OCRConfig | str | Path | dict[str, Any], device: str | torch.device = "meta",
                    dtype: torch.dtype | str | None = None, seed: int | None = None) -> "DeepseekOCR":
        """Build the layout; on a real device the weights are PyTorch's random init (benchmarks, tests)."""
        cfg = config if isinstance(config, OCRConfig) else OCRConfig.load(config)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            model = cls(cfg)
        model.requires_grad_(False).eval()
        if str(device) != "meta":
            model.to(dtype=_dtype(dtype, torch.float32))
        return model

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path = DEFAULT_MODEL_ID, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, revision: str | None = None) -> "DeepseekOCR":
        """Load the official checkpoint (local dir or hub id) strictly, on `device` in `dtype`.

        dtype defaults to the config's `torch_dtype` on CUDA and float32 on CPU.
        """
        model_dir = resolve_model_dir(path_or_id, revision)
        cfg = OCRConfig.load(model_dir)
        device = torch.device(device)
        default = _dtype(cfg.torch_dtype, torch.bfloat16) if device.type == "cuda" else torch.float32
        dtype = _dtype(dtype, default)
        with torch.device("meta"):
            model = cls(cfg)
        load_state(model, read_checkpoint(model_dir), device, dtype)
        model.requires_grad_(False).eval()
        model.attach_tokenizer(load_tokenizer(model_dir))
        model.name_or_path = str(path_or_id)
        for m in model.modules():
            if isinstance(m, MoE):
                m.stack_experts()
        logger.info("loaded DeepSeek-OCR from %s on %s (%s)", model_dir, device, dtype)
        return model

    def attach_tokenizer(self, tokenizer) -> None:
        """Use `tokenizer` for prompts; special ids come from it (config `image_token_id` wins)."""
        self.tokenizer = tokenizer
        self.image_token_id = resolve_image_token_id(self.config.image_token_id, tokenizer)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.bos_token_id = self.config.decoder.bos_token_id if bos is None else int(bos)
        self.eos_token_id = self.config.decoder.eos_token_id if eos is None else int(eos)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ---- prompt ---------------------------------------------------------------------------------
    def build_input_ids(self, prompt: str, images: Sequence[ImageViews]) -> torch.Tensor:
        """BOS + prompt pieces with one placeholder run per `<image>` (no EOS) -> LongTensor[T]."""
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer attached: use from_pretrained() or attach_tokenizer()")
        ids = build_prompt_ids(self.tokenizer, prompt, [v.num_image_tokens for v in images],
                               self.image_token_id, self.bos_token_id)
        return torch.tensor(ids, dtype=torch.long)

    def special_token_id(self, token: str) -> int | None:
        return None if self.tokenizer is None else token_id(self.tokenizer, token)

    # ---- forward pieces -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageViews]) -> list[torch.Tensor]:
        """One [num_image_tokens, hidden] block per image, in order."""
        return encode_images(self.model, list(images)) if images else []

    def embed(self, input_ids: torch.Tensor, images: Sequence[ImageViews]) -> torch.Tensor:
        """Token embeddings [B, T, D] with image blocks scattered over the placeholder positions."""
        x = self.model.embed_tokens(input_ids)
        blocks = self.encode_images(images)
        feats = torch.cat(blocks) if blocks else x.new_zeros((0, x.shape[-1]))
        return self.scatter_image_features(input_ids, x, feats)

    def scatter_image_features(self, input_ids: torch.Tensor, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Write image features, in order, over the placeholder positions of embeddings x [B, T, D]."""
        mask = input_ids == self.image_token_id
        n_slots = int(mask.sum())
        if feats.shape[0] != n_slots:
            raise ValueError(f"images give {feats.shape[0]} image tokens but input_ids hold {n_slots} placeholders "
                             f"(id {self.image_token_id}); build ids with build_input_ids()")
        return x.masked_scatter(mask[..., None], feats.to(x.dtype)) if n_slots else x

    def hidden(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None,
               kv_len: int | None = None) -> torch.Tensor:
        """Decoder over embeddings [B, T, D] at positions [B, T] -> final-normed hidden [B, T, D]."""
        d = self.config.decoder
        cos, sin = rope_cos_sin(positions, d.head_dim, d.rope_theta, x.dtype)
        mask = None
        if cache is not None:
            kv_len = kv_len or int(positions.max()) + 1
            # Round up so attention sees few distinct shapes (cuDNN builds a plan per shape); the mask
            # hides the extra slots.
            kv_len = min(-(-kv_len // KV_LEN_BUCKET) * KV_LEN_BUCKET, cache.max_len)
            mask = cache_mask(positions, kv_len)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, positions, mask)
        return self.model.norm(x)

    def step(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache, kv_len: int | None = None) -> torch.Tensor:
        """Cached step over embeddings [B, T, D] -> float32 logits of the last position [B, V]."""
        h = self.hidden(x, positions, cache, kv_len)
        return self.lm_head(h[:, -1]).float()  # only the last position needs the 129k-wide head

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor, images: Sequence[ImageViews] = ()) -> torch.Tensor:
        """One uncached causal pass: LongTensor[T] -> float32 logits [T, vocab]."""
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device).view(1, -1)
        positions = torch.arange(ids.shape[1], device=self.device)[None]
        return self.lm_head(self.hidden(self.embed(ids, images), positions))[0].float()

    forward = forward_logits

    # ---- generation ---------------------------------------------------------------------------
    def generate_greedy(self, input_ids: torch.Tensor, images: Sequence[ImageViews] = (), max_new_tokens: int = 8192,
                        *, ngram_size: int | None = None, window_size: int | None = None,
                        whitelist: Iterable[int] = (), keep_logits: bool = False) -> Generation:
        """Greedy decoding with finish reason ("eos" | "length"); EOS, when hit, is the last id."""
        return greedy_generate(self, input_ids, list(images), max_new_tokens, ngram_size=ngram_size,
                               window_size=window_size, whitelist=whitelist, keep_logits=keep_logits)

    def generate(self, input_ids: torch.Tensor, images: Sequence[ImageViews] = (), max_new_tokens: int = 8192,
                 **guard: Any) -> list[int]:
        """Greedy new ids (EOS included when hit). `guard`: ngram_size, window_size, whitelist."""
        return self.generate_greedy(input_ids, images, max_new_tokens, **guard).token_ids
