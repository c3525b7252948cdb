"""DeepSeek-OCR-2 and Unlimited-OCR without running a model: the registry picks them from config.json (or
from their hub id before it is downloaded), their full-size layouts equal the official key tables, token
counts follow each family's geometry, and preprocessing is pixel-exact with transformers' port."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import SPEC
from dsocr_model import DeepseekOCR
from dsocr_model.family.registry import architecture_for, spec_for
from dsocr_model.modeling.config import OCR2Config, OCRConfig
from dsocr_model.modeling.preprocess import PAD_COLOR, preprocess_image

TABLES = {"deepseek-ocr-2": ("official_config_ocr2.json", "ocr2_checkpoint_keys.tsv", 2707),
          "unlimited-ocr": ("official_config_unlimited_ocr.json", "unlimited_ocr_checkpoint_keys.tsv", 2710)}


def _table(name: str) -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in open(SPEC / name) if not line.startswith("#")]
    return {r[0]: tuple(json.loads(r[1])) for r in rows}


@pytest.mark.parametrize("family", sorted(TABLES))
def test_full_size_layout_equals_the_official_key_table(family):
    config, table, rows = TABLES[family]
    model = DeepseekOCR.from_config(SPEC / config, device="meta")
    assert model.spec.name == family
    got = {k: tuple(v.shape) for k, v in model.to_checkpoint(model.state_dict()).items()}
    want = _table(table)
    assert len(want) == rows
    assert got == want


def test_configs_read_each_family():
    ocr2 = OCR2Config.from_dict(json.loads((SPEC / "official_config_ocr2.json").read_text()))
    # the hub file keeps v1's stale [512, 1024]: the real last conv has the encoder's width
    assert ocr2.sam.downsample_channels == (512, 896) and ocr2.encoder.dim == 896 and ocr2.projector_input_dim == 896
    assert (ocr2.encoder.layers, ocr2.encoder.heads, ocr2.encoder.kv_heads, ocr2.encoder.rope_theta) == (24, 14, 2, 1e6)
    assert ocr2.decoder.sliding_window is None and ocr2.decoder.max_position_embeddings == 8192
    unlimited = OCRConfig.from_dict(json.loads((SPEC / "official_config_unlimited_ocr.json").read_text()))
    assert unlimited.decoder.sliding_window == 128 and unlimited.decoder.max_position_embeddings == 32768
    v1 = OCRConfig.from_dict(json.loads((SPEC / "official_config.json").read_text()))
    assert v1.decoder.sliding_window is None


def test_registry_picks_the_family_from_config_and_official_hub_ids():
    for config, name in (("official_config.json", "deepseek-ocr"), ("official_config_ocr2.json", "deepseek-ocr-2"),
                         ("official_config_unlimited_ocr.json", "unlimited-ocr")):
        assert architecture_for(json.loads((SPEC / config).read_text())).name == name
    # transformers' port writes a native config for Unlimited-OCR (model_type unlimited_ocr)
    assert architecture_for({"model_type": "unlimited_ocr", "architectures": ["UnlimitedOCRForConditionalGeneration"]}).name == "unlimited-ocr"
    # before anything is downloaded, an official id already names its family (prompts, modes, guard)
    assert spec_for("baidu/Unlimited-OCR").name == "unlimited-ocr"
    assert spec_for("deepseek-ai/DeepSeek-OCR-2").name == "deepseek-ocr-2"
    assert spec_for("someone/finetuned-ocr").name == "deepseek-ocr"


@pytest.mark.parametrize("size, grid, tokens", [
    ((600, 640), (1, 1), 273), ((1000, 1000), (2, 2), 693), ((1190, 1684), (2, 3), 903), ((1684, 1190), (4, 3), 1503),
    ((2480, 3508), (4, 6), 2733), ((1500, 1500), (3, 3), 1203), ((4000, 1000), (8, 2), 1893), ((641, 500), (5, 4), 2313),
])
def test_unlimited_ocr_token_counts_match_the_worked_examples(size, grid, tokens):
    spec = spec_for("baidu/Unlimited-OCR")
    assert spec.view_grid(*size) == grid
    assert spec.image_token_count(*size) == tokens
    assert spec.image_token_count(*size, mode="base") == 273  # one page of a multi-page pass


def test_unlimited_ocr_reads_up_to_32_tiles():
    spec = spec_for("baidu/Unlimited-OCR")
    assert spec.view_grid(640 * 32 + 1, 641) == (32, 1)
    assert spec.image_token_count(641, 640 * 32) == 273 + 320 * 11  # (1, 32): 10*32 rows of 11
    with pytest.raises(ValueError, match="2..32"):
        spec.check_crops(33)


@pytest.mark.parametrize("tiles", [0, 2, 3, 4, 5, 6])
def test_ocr2_token_counts_are_257_plus_144_per_tile(tiles):
    spec = spec_for("deepseek-ai/DeepSeek-OCR-2")
    grid = {0: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1), 6: (3, 2)}[tiles]
    assert spec.count_tokens(1024, 768, grid) == 257 + 144 * tiles


def test_ocr2_a4_page_at_144_dpi_gives_1121_tokens():
    spec = spec_for("deepseek-ai/DeepSeek-OCR-2")
    assert spec.view_grid(1190, 1684) == (2, 3)
    assert spec.image_token_count(1190, 1684) == 1121
    assert spec.image_token_count(700, 768) == 257  # no side above 768: the global view alone


def test_family_prompts_and_tasks():
    unlimited, ocr2 = spec_for("baidu/Unlimited-OCR"), spec_for("deepseek-ai/DeepSeek-OCR-2")
    assert unlimited.prompt() == "<image>document parsing."
    assert unlimited.multi_page_prompt_for(3) == "<image><image><image>Multi page parsing."
    with pytest.raises(ValueError, match="has no prompt for unlimited-ocr"):
        unlimited.prompt("free_ocr")
    assert ocr2.prompt() == "<image>\n<|grounding|>Convert the document to markdown." and ocr2.prompt("free_ocr")
    with pytest.raises(ValueError, match="one page per pass"):
        ocr2.multi_page_prompt_for(2)
    assert (unlimited.document_guard.ngram_size, unlimited.document_guard.window_size) == (35, 128)
    assert unlimited.multi_page_guard.window_size == 1024 and unlimited.whitelist_ids == ()
    assert ocr2.whitelist_ids == (128821, 128822)


def _page(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("family, processor_args", [("deepseek-ocr-2", {}),
                                                    ("unlimited-ocr", {"tile_size": 640, "max_patches": 32})])
@pytest.mark.parametrize("size", [(1100, 1500), (500, 400), (1684, 1190), (2000, 600), (922, 1024)])
def test_preprocessing_is_pixel_exact_with_the_transformers_port(family, processor_args, size):
    # Unlimited-OCR's own processor needs torchvision; the OCR-2 PIL processor with 640-pixel tiles and a cap
    # of 32 runs the same recipe (FAMILY.md §4)
    from transformers import DeepseekOcr2ImageProcessorPil

    spec = spec_for({"deepseek-ocr-2": "deepseek-ai/DeepSeek-OCR-2", "unlimited-ocr": "baidu/Unlimited-OCR"}[family])
    image = _page(*size)
    ours = preprocess_image(image, None, None, spec)
    theirs = DeepseekOcr2ImageProcessorPil(**processor_args)(image, return_tensors="pt")
    assert torch.equal(theirs["pixel_values"][0], ours.global_view)
    assert int(theirs["num_local_patches"][0]) == ours.tiles.shape[0]
    if ours.is_tiled:
        assert torch.equal(theirs["pixel_values_local"], ours.tiles)


def test_one_pixel_pad_case_follows_the_original_not_the_port():
    # (1024 - 921) % 4 == 3: Pillow's ImageOps.pad (the original recipe) rounds the offset, the port floors it
    from transformers import DeepseekOcr2ImageProcessorPil

    image = _page(921, 1024, seed=1)
    ours = preprocess_image(image, None, None, spec_for("deepseek-ai/DeepSeek-OCR-2"))
    padded = np.asarray(ImageOps.pad(image, (1024, 1024), color=PAD_COLOR))
    assert torch.equal(ours.global_view, torch.from_numpy(padded.copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5))
    port = DeepseekOcr2ImageProcessorPil()(image, return_tensors="pt")["pixel_values"][0]
    assert not torch.equal(port, ours.global_view)
    assert torch.equal(port[:, :, 51:51 + 921], ours.global_view[:, :, 52:52 + 921])  # the same page, one pixel left
