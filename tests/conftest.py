from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
SPEC = DATA / "spec"
FIXTURES = DATA / "fixtures"


def u8_to_normalised(u8: np.ndarray) -> torch.Tensor:
    """The reference transform on stored uint8 pixels: divide by 255, subtract 0.5, divide by 0.5."""
    return torch.from_numpy(u8).float().div(255).sub(0.5).div(0.5)


def load_golden_case(name: str, cases: dict, pixels) -> tuple[dict, dict, list, str]:
    """(case metadata, reference tensors, [ImageViews] as the reference received them, prompt)."""
    from safetensors.torch import load_file

    from dsocr_model import ImageViews

    c = cases[name]
    ref = load_file(str(GOLDEN / "cases" / f"{name}.safetensors"))
    keys = c.get("pixel_inputs_npz_keys") or {}
    views = []
    if keys.get("global_view"):
        tiles = u8_to_normalised(pixels[keys["tiles"]]) if keys.get("tiles") else None
        views = [ImageViews(u8_to_normalised(pixels[keys["global_view"]])[0], tiles, tuple(c["grid_nw_nh"]))]
    return c, ref, views, "<image>\nFree OCR." if views else "The quick brown fox"


@pytest.fixture(scope="session")
def golden_model():
    from dsocr_model import DeepseekOCR

    return DeepseekOCR.from_pretrained(GOLDEN, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def golden_cases() -> dict:
    with open(GOLDEN / "cases.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def golden_pixels():
    return np.load(GOLDEN / "preprocess_pixels.npz")


def tiny_config_dict(**decoder) -> dict:
    """The golden config (official schema, tiny sizes) with optional decoder overrides."""
    with open(GOLDEN / "config.json") as f:
        cfg = json.load(f)
    cfg.update(decoder)
    return cfg
