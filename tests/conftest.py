from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
SPEC = DATA / "spec"


def u8_to_normalised(u8: np.ndarray) -> torch.Tensor:
    """The reference transform on stored uint8 pixels: divide by 255, subtract 0.5, divide by 0.5."""
    return torch.from_numpy(u8).float().div(255).sub(0.5).div(0.5)


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
