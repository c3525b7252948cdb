"""Shared helpers for benchmarks: synthetic pages and a full-size random-weight model (no download)."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_CONFIG = ROOT / "tests" / "data" / "spec" / "official_config.json"
TINY_CONFIG = ROOT / "tests" / "data" / "golden" / "config.json"
FAMILY_CONFIGS = {"deepseek-ocr": OFFICIAL_CONFIG,
                  "deepseek-ocr-2": ROOT / "tests" / "data" / "spec" / "official_config_ocr2.json",
                  "unlimited-ocr": ROOT / "tests" / "data" / "spec" / "official_config_unlimited_ocr.json"}
FAMILY_ALIASES = {"v1": "deepseek-ocr", "ocr2": "deepseek-ocr-2", "unlimited": "unlimited-ocr"}
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


def family_config(family: str, full_size: bool):
    """The official config of a family, or (tiny) the config the tests write for it."""
    family = FAMILY_ALIASES.get(family, family)
    if full_size:
        return FAMILY_CONFIGS[family]
    if family == "deepseek-ocr":
        return TINY_CONFIG
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_family import hub_config  # the tiny family configs live with the tests that prove them

    return hub_config(family)


def build_model(full_size: bool, device: str, dtype: torch.dtype, seed: int = 0, family: str = "deepseek-ocr"):
    from dsocr_model import DeepseekOCR

    cfg = family_config(family, full_size)
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
