"""DeepseekOCR2: DeepSeek-OCR-2 (`deepseek-ai/DeepSeek-OCR-2`), loadable from its checkpoint unchanged.

The decoder, tokenizer, prompts and the whole generation path are v1's; only the vision side differs
(FAMILY.md §2): SAM ViT-B whose last conv has the encoder's width (896), the Qwen2-style query encoder
(`model.qwen2_model`, query_encoder.py) instead of CLIP-L, a Linear(896 -> 1280) projector, and no
`image_newline` (its spec lays the image block out flat). Module names equal the checkpoint's keys.
"""
from __future__ import annotations

import torch

from .config import OCR2Config
from .model import Backbone, DeepseekOCR
from .query_encoder import QueryEncoder
from .sam import SamEncoder


class OCR2Backbone(Backbone):
    """Everything under the checkpoint's `model.` prefix; v1's, with the query encoder and no newline."""

    def build_encoder(self, cfg: OCR2Config) -> None:
        self.sam_model = SamEncoder(cfg.sam)
        self.qwen2_model = QueryEncoder(cfg.encoder)

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """Square views [N, 3, S, S] (S = 1024 or 768) -> [N, (S/64)², hidden]."""
        s = self.sam_model(pixels)  # (N, C, q, q)
        return self.projector(self.qwen2_model(s.flatten(2).transpose(1, 2)))  # (N, q*q, hidden)


class DeepseekOCR2(DeepseekOCR):
    config_class = OCR2Config
    backbone_class = OCR2Backbone
