"""DeepseekOCR: DeepEncoder + DeepSeek3B-MoE decoder, loadable from the official checkpoint unchanged.

Module names equal checkpoint keys: `model.{sam_model, vision_model, projector, image_newline,
view_seperator, embed_tokens, layers, norm}` and `lm_head`, except the routed experts, which `sanitize`
stacks once at load (`mlp.experts.{e}.*_proj.weight` -> `mlp.experts.{gate_up,down}_proj`) and
`to_checkpoint` unstacks. Image features are written, in order, over the `<image>` placeholder positions
of the token embeddings (reference `masked_scatter_`). The model embeds, encodes images and runs the
decoder; generation (one sequence or batched) lives in `dsocr_model.runtime`.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..family.deepseek_ocr import DEEPSEEK_OCR
from ..family.registry import DEFAULT_MODEL_ID, architecture_for
from ..family.spec import ModelSpec
from .clip import ClipEncoder
from .config import OCRConfig
from .decoder import DecoderLayer, KVCache, RMSNorm, RowLengths, cache_mask, rope_cos_sin
from .preprocess import ImageViews
from .sam import SamEncoder
from .tokenizer import build_prompt_ids, load_tokenizer, resolve_image_token_id, token_id
from .vision import Projector, encode_images, encode_views
from .weights import load_state, read_checkpoint, resolve_model_dir

logger = logging.getLogger(__name__)

# Re-saved checkpoints may carry buffers we compute instead.
IGNORED_KEYS = ("rotary_emb.inv_freq", "vision_model.embeddings.position_ids")
EXPERT_KEY = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<e>\d+)\.(?P<proj>gate|up|down)_proj\.weight$")


class Backbone(nn.Module):
    """Everything under the checkpoint's `model.` prefix: the vision encoder (`build_encoder`, which another
    architecture overrides), projector, separator, and the decoder's embeddings, layers and norm."""

    def __init__(self, cfg: OCRConfig) -> None:
        super().__init__()
        d = cfg.decoder
        self.build_encoder(cfg)
        self.projector = Projector(cfg.projector_input_dim, d.hidden_size)
        self.view_seperator = nn.Parameter(torch.zeros(d.hidden_size))  # sic: the checkpoint's spelling
        self.embed_tokens = nn.Embedding(d.vocab_size, d.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(d, i) for i in range(d.num_hidden_layers))
        self.norm = RMSNorm(d.hidden_size, d.rms_norm_eps)

    def build_encoder(self, cfg: OCRConfig) -> None:
        """DeepEncoder: SAM, CLIP-L over SAM's tokens, and the newline written after each row of tokens."""
        self.sam_model = SamEncoder(cfg.sam)
        self.vision_model = ClipEncoder(cfg.clip)
        self.image_newline = nn.Parameter(torch.zeros(cfg.decoder.hidden_size))

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """Square views [N, 3, S, S] -> [N, (S/64)², hidden] (DeepEncoder: CLIP over SAM, then projector)."""
        return encode_views(self.sam_model, self.vision_model, self.projector, pixels)


def _dtype(dtype: torch.dtype | str | None, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


class DeepseekOCR(nn.Module):
    config_class = OCRConfig
    backbone_class = Backbone  # everything under `model.`; another architecture swaps its encoder here

    def __init__(self, config: OCRConfig, spec: ModelSpec | None = None) -> None:
        super().__init__()
        self.config = config
        self.spec = spec or DEEPSEEK_OCR
        self.model = self.backbone_class(config)
        self.lm_head = nn.Linear(config.decoder.hidden_size, config.decoder.vocab_size, bias=False)
        self.tokenizer = None
        self.image_token_id = resolve_image_token_id(config.image_token_id, None)
        self.bos_token_id = config.decoder.bos_token_id
        self.eos_token_id = config.decoder.eos_token_id

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: OCRConfig | str | Path | dict[str, Any], device: str | torch.device = "meta",
                    dtype: torch.dtype | str | None = None, seed: int | None = None) -> "DeepseekOCR":
        """Build the layout of the config's architecture; on a real device the weights are random
        (benchmarks, tests). An OCRConfig object builds this class with its default spec."""
        if isinstance(config, OCRConfig):
            impl, cfg, spec = cls, config, None
        else:
            raw = _config_dict(config)
            arch = architecture_for(raw)
            impl = arch.model_class()
            cfg, spec = impl.config_class.from_dict(raw), arch.spec
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            model = impl(cfg, spec)
        model.requires_grad_(False).eval()
        if str(device) != "meta":
            model.to(dtype=_dtype(dtype, torch.float32))
        return model

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path = DEFAULT_MODEL_ID, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, revision: str | None = None) -> "DeepseekOCR":
        """Load a checkpoint of any registered architecture (local dir or hub id) strictly, on `device` in
        `dtype`; `config.json` picks the architecture. dtype defaults to the config's `torch_dtype` on CUDA
        and float32 on CPU."""
        model_dir = resolve_model_dir(path_or_id, revision)
        raw = _config_dict(model_dir)
        arch = architecture_for(raw)
        impl = arch.model_class()
        cfg = impl.config_class.from_dict(raw)
        device = torch.device(device)
        default = _dtype(cfg.torch_dtype, torch.bfloat16) if device.type == "cuda" else torch.float32
        dtype = _dtype(dtype, default)
        with torch.device("meta"):
            model = impl(cfg, arch.spec)
        load_state(model, read_checkpoint(model_dir), device, dtype)
        model.requires_grad_(False).eval()
        model.attach_tokenizer(load_tokenizer(model_dir))
        model.name_or_path = str(path_or_id)
        logger.info("loaded %s from %s on %s (%s)", arch.name, model_dir, device, dtype)
        return model

    @staticmethod
    def sanitize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint names -> module names: drop buffers we compute, stack each layer's routed experts.
        A layer whose experts are incomplete or disagree in shape stays unstacked, so the strict check
        names the offending checkpoint keys."""
        out = {k: v for k, v in state.items() if not k.endswith(IGNORED_KEYS)}
        groups: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
        for k in out:
            if m := EXPERT_KEY.match(k):
                groups[m["prefix"]][(m["proj"], int(m["e"]))] = k
        for prefix, keys in groups.items():
            n = 1 + max(e for _, e in keys)
            if len(keys) != 3 * n or len({tuple(out[k].shape) for (p, _), k in keys.items() if p == "gate"}) != 1:
                continue
            gate_up = [torch.cat([out.pop(keys["gate", e]), out.pop(keys["up", e])]) for e in range(n)]
            out[f"{prefix}.gate_up_proj"] = torch.stack(gate_up)  # (E, 2I, D)
            out[f"{prefix}.down_proj"] = torch.stack([out.pop(keys["down", e]) for e in range(n)])  # (E, D, I)
        return out

    @staticmethod
    def to_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Module names -> checkpoint names (views, no copies): the inverse of `sanitize`."""
        out: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            if k.endswith(".mlp.experts.gate_up_proj"):
                gate, up = v.chunk(2, dim=1)
                for e in range(v.shape[0]):
                    out[f"{k[:-len('gate_up_proj')]}{e}.gate_proj.weight"] = gate[e]
                    out[f"{k[:-len('gate_up_proj')]}{e}.up_proj.weight"] = up[e]
            elif k.endswith(".mlp.experts.down_proj"):
                for e in range(v.shape[0]):
                    out[f"{k[:-len('down_proj')]}{e}.down_proj.weight"] = v[e]
            else:
                out[k] = v
        return out

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

    def embed(self, input_ids: torch.Tensor, images: Sequence[ImageViews] = (),
              features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings [B, T, D] with image blocks (encoded here, or given) over the placeholders."""
        x = self.model.embed_tokens(input_ids)
        blocks = self.encode_images(images) if features is None else list(features)
        feats = torch.cat(blocks) if blocks else x.new_zeros((0, x.shape[-1]))
        mask = input_ids == self.image_token_id
        n_slots = int(mask.sum())
        if feats.shape[0] != n_slots:
            raise ValueError(f"images give {feats.shape[0]} image tokens but input_ids hold {n_slots} placeholders "
                             f"(id {self.image_token_id}); build ids with build_input_ids()")
        return x.masked_scatter(mask[..., None], feats.to(x.dtype)) if n_slots else x

    def hidden(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None,
               kv_len: int | None = None, slots: torch.Tensor | None = None,
               visible: torch.Tensor | None = None, fresh: bool = False) -> torch.Tensor:
        """Decoder over embeddings [B, T, D] at positions [B, T] -> final-normed hidden [B, T, D].

        With a cache, K/V go to `slots` (default: the positions) and each query sees slots 0..`visible`
        (default: its position; R-SWA decoding passes both, see decoder.ring_slot); attention reads slots
        0..kv_len (default: the last visible + 1), and callers may round kv_len up (the mask hides the extra
        slots) to keep the number of attention shapes small. `fresh`: the rows hold nothing yet (a prompt
        prefill), so K/V are only written and attention is causal over x itself. Without a cache: one causal pass."""
        d = self.config.decoder
        cos, sin = rope_cos_sin(positions, d.head_dim, d.rope_theta, x.dtype)
        slots = positions if slots is None else slots
        mask = None
        if cache is not None and not fresh:
            visible = positions if visible is None else visible
            kv_len = min(kv_len or int(visible.max()) + 1, cache.max_len)
            if cache.ragged and x.shape[1] == 1:  # each row over its own slots: no mask, no shared length
                mask = RowLengths((visible[:, 0] + 1).to(torch.int32), kv_len)
            else:
                mask = cache_mask(visible, kv_len)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache, slots, mask)
        return self.model.norm(x)

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor, images: Sequence[ImageViews] = ()) -> torch.Tensor:
        """One uncached causal pass: LongTensor[T] -> float32 logits [T, vocab]."""
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device).view(1, -1)
        positions = torch.arange(ids.shape[1], device=self.device)[None]
        return self.lm_head(self.hidden(self.embed(ids, images), positions))[0].float()

    forward = forward_logits


def _config_dict(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    p = Path(source)
    with open(p / "config.json" if p.is_dir() else p, encoding="utf-8") as f:
        return json.load(f)
