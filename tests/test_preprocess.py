"""Preprocessing must be pixel-exact with the official HF and vLLM processors (golden/preprocess.json)."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image, ImageOps

from conftest import GOLDEN, u8_to_normalised
from dsocr_model import ImageViews, count_image_tokens, preprocess_image
from dsocr_model.family.geometry import choose_grid

RECORDS = json.loads((GOLDEN / "preprocess.json").read_text())


def _load(name: str) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(GOLDEN / "images" / f"{name}.png")).convert("RGB")


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: f"{r['image']}-{r['mode']}-{r['path']}")
def test_views_match_reference_bit_for_bit(rec):
    views = preprocess_image(_load(rec["image"]), rec["mode"], max_crops=9 if rec["path"] == "hf_infer" else 6)
    assert list(views.grid) == rec["grid_nw_nh"]
    assert views.tiles.shape[0] == rec["n_tiles"]
    assert views.num_image_tokens == rec["n_image_placeholders"]
    assert views.global_view.dtype == torch.float32
    for key, tensor in (("global_view", views.global_view[None]), ("tiles", views.tiles)):
        ref = rec[key]
        if ref is None or "identical_to" in ref:
            continue
        assert list(tensor.shape) == ref["shape"]
        assert _sha(tensor) == ref["sha256_float32"]


def test_stored_pixels_equal_our_views(golden_pixels):
    views = preprocess_image(_load("a4_1190x1684"), "gundam", max_crops=9)
    assert torch.equal(views.global_view, u8_to_normalised(golden_pixels["a4_1190x1684/gundam/hf_infer/global"])[0])
    assert torch.equal(views.tiles, u8_to_normalised(golden_pixels["a4_1190x1684/gundam/hf_infer/tiles"]))


@pytest.mark.parametrize("size,max_crops,grid,tokens", [
    ((1000, 1000), 6, (2, 2), 693), ((1190, 1684), 6, (2, 3), 903), ((1684, 1190), 6, (3, 2), 893),
    ((2480, 3508), 6, (2, 3), 903), ((4000, 1000), 6, (4, 1), 683), ((1500, 1500), 6, (2, 2), 693),
    ((1500, 1500), 9, (3, 3), 1203),
])
def test_worked_tiling_examples(size, max_crops, grid, tokens):
    assert choose_grid(*size, 640, max_crops) == grid
    assert count_image_tokens(1024, 640, grid) == tokens


@pytest.mark.parametrize("mode,tokens", [("tiny", 73), ("small", 111), ("base", 273), ("large", 421)])
def test_single_view_modes(mode, tokens):
    views = preprocess_image(Image.new("RGB", (900, 300), "white"), mode)
    assert views.grid == (1, 1) and views.tiles.shape[0] == 0
    assert views.num_image_tokens == tokens


def test_gundam_small_image_is_untiled_and_gundam_m_geometry():
    assert preprocess_image(Image.new("RGB", (640, 640)), "gundam").num_image_tokens == 273
    v = preprocess_image(Image.new("RGB", (1190, 1684)), "gundam-m")
    assert v.global_view.shape[-1] == 1280 and v.tiles.shape[-1] == 1024
    assert v.num_image_tokens == 421 + (16 * v.grid[1]) * (16 * v.grid[0] + 1)


def test_non_rgb_input_is_converted():
    rgba = Image.new("RGBA", (300, 200), (10, 20, 30, 255))
    assert torch.equal(preprocess_image(rgba, "tiny").global_view, preprocess_image(rgba.convert("RGB"), "tiny").global_view)


def test_image_views_validation():
    g = torch.zeros(3, 1024, 1024)
    with pytest.raises(ValueError, match="needs 6 tiles"):
        ImageViews(g, torch.zeros(4, 3, 640, 640), (2, 3))
    with pytest.raises(ValueError, match="untiled"):
        ImageViews(g, torch.zeros(2, 3, 640, 640), (1, 1))
    with pytest.raises(ValueError):
        ImageViews(torch.zeros(3, 10, 12))
    with pytest.raises(ValueError, match="unknown mode"):
        preprocess_image(Image.new("RGB", (10, 10)), "huge")
    assert ImageViews(g, torch.zeros(6, 3, 640, 640), (2, 3)).num_image_tokens == 903
