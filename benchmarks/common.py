"""Shared helpers for benchmarks: synthetic pages and a full-size random-weight model (no download)."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_CONFIG = ROOT / "tests" / "data" / "spec" / "official_config.json"
TINY_CONFIG = ROOT / "tests" / "data" / "golden" / "config.json"
# "\n<|grounding|>Convert the document to markdown." has 11 ids in the real tokenizer; the exact ids do
# not change the cost, so fixed stand-ins below the special-token range are used.
PROMPT_TAIL = [201, 128820, 31008, 270, 3287, 304, 56066, 16, 1294, 9834, 13]


def synthetic_page(width: int = 1190, height: int = 1684, seed: int = 0) -> Image.Image:
    """An A4-at-144-dpi-sized page with text-like strokes (content does not affect the cost)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    y = 80
    while y < height - 80:
        x = 80
        while x < width - 120:
            w = rng.randint(20, 90)
            d.rectangle([x, y, x + w, y + 14], fill=(30, 30, 30))
            x += w + 12
        y += 30
    return img


def build_model(full_size: bool, device: str, dtype: torch.dtype, seed: int = 0):
    from dsocr_model import DeepseekOCR

    cfg = OFFICIAL_CONFIG if full_size else TINY_CONFIG
    model = DeepseekOCR.from_config(cfg, device=device, dtype=dtype, seed=seed)
    if full_size:  # tame random init so bf16 activations stay finite through 12 layers
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
