"""Our DeepSeek-OCR-2 and Unlimited-OCR against transformers' ports (an independent implementation) on the
same tiny random checkpoints in the official key layout: logits, greedy tokens, and R-SWA past its window;
then the batched engine against the one-sequence path for all three families at once."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import GOLDEN
from dsocr_model import DeepseekOCR
from dsocr_model.modeling.preprocess import preprocess_image
from dsocr_model.runtime.batch import PageRequest
from dsocr_model.runtime.engine import Engine
from dsocr_model.runtime.generate import generate
from tiny_family import TINY_WINDOW, load_port, port_inputs, write_checkpoint

PORTED = ("deepseek-ocr-2", "unlimited-ocr")
LOGIT_TOLERANCE = 5e-4  # fp32; measured ~5e-6
GREEDY_STEPS = 24  # 6 windows of the tiny R-SWA ring


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    return {f: write_checkpoint(f, root / f, seed=i) for i, f in enumerate(PORTED)}


@pytest.fixture(scope="module")
def ours(checkpoints):
    return {f: DeepseekOCR.from_pretrained(d, dtype=torch.float32) for f, d in checkpoints.items()}


@pytest.fixture(scope="module")
def ports(checkpoints):
    return {f: load_port(f, d) for f, d in checkpoints.items()}


def _document(w: int, h: int, seed: int = 0) -> Image.Image:
    """A synthetic page: coloured bars on white, so views differ from each other."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 20))
        draw.rectangle((x, y, x + int(rng.integers(20, 300)), y + int(rng.integers(5, 40))),
                       fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def _inputs(model, size=(900, 700), mode=None, seed=0):
    views = [preprocess_image(_document(*size, seed), mode, None, model.spec)]
    return model.build_input_ids(model.spec.prompt(), views), views


@pytest.mark.parametrize("family", PORTED)
def test_port_loads_our_checkpoint_by_official_names(family, ours, ports):
    _, info = ports[family]
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    # and from_pretrained picked the family from config.json
    assert (type(ours[family]).__name__, ours[family].spec.name) == {
        "deepseek-ocr-2": ("DeepseekOCR2", "deepseek-ocr-2"), "unlimited-ocr": ("DeepseekOCR", "unlimited-ocr")}[family]


@pytest.mark.parametrize("family", PORTED)
@pytest.mark.parametrize("size", [(1100, 1500), (600, 500)])  # tiled (6 / 12 tiles) and global view only
def test_logits_match_the_port(family, size, ours, ports):
    model, (port, _) = ours[family], ports[family]
    ids, views = _inputs(model, size)
    mine = model.forward_logits(ids, views)
    with torch.no_grad():
        theirs = port(**port_inputs(family, views, ids)).logits[0].float()
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max().item() < LOGIT_TOLERANCE


def _port_greedy(family, port, views, ids, steps):
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=steps, eos_token_id=None, pad_token_id=2)
    with torch.no_grad():
        out = port.generate(**port_inputs(family, views, ids), generation_config=config, output_logits=True,
                            return_dict_in_generate=True)
    return out.sequences[0, len(ids):].tolist(), [s[0].float() for s in out.logits]


@pytest.mark.parametrize("family", PORTED)
def test_greedy_tokens_equal_the_port(family, ours, ports):
    model, (port, _) = ours[family], ports[family]
    ids, views = _inputs(model)
    mine = generate(model, ids, views, GREEDY_STEPS, eos_id=-1, keep_logits=True)
    tokens, logits = _port_greedy(family, port, views, ids, GREEDY_STEPS)
    assert mine.token_ids == tokens and len(tokens) == GREEDY_STEPS
    assert max((a - b).abs().max().item() for a, b in zip(mine.step_logits, logits)) < LOGIT_TOLERANCE


def test_unlimited_decoding_is_rswa_past_the_window(ours, ports):
    """The port and we agree step by step past the window, and full attention (what a teacher-forced forward
    computes) would not: the test sees R-SWA, not a lucky loop."""
    model = ours["unlimited-ocr"]
    assert model.config.decoder.sliding_window == TINY_WINDOW
    ids, views = _inputs(model, seed=3)
    windowed = generate(model, ids, views, GREEDY_STEPS, eos_id=-1, keep_logits=True)
    full = dataclasses.replace(model.config.decoder, sliding_window=None)
    model.config = dataclasses.replace(model.config, decoder=full)
    try:
        causal = generate(model, ids, views, GREEDY_STEPS, eos_id=-1, keep_logits=True)
    finally:
        model.config = dataclasses.replace(model.config, decoder=dataclasses.replace(full, sliding_window=TINY_WINDOW))
    gaps = [(a - b).abs().max().item() for a, b in zip(windowed.step_logits, causal.step_logits)]
    # identical while every generated token is inside the window (the first W+1 steps: step i sees i tokens)
    assert max(gaps[: TINY_WINDOW + 1]) < 1e-5
    assert min(gaps[TINY_WINDOW + 1:]) > 1e-3
    _, theirs = _port_greedy("unlimited-ocr", ports["unlimited-ocr"][0], views, ids, GREEDY_STEPS)
    assert max((a - b).abs().max().item() for a, b in zip(windowed.step_logits, theirs)) < LOGIT_TOLERANCE


def test_engine_equals_one_sequence_path_for_all_three_families(ours):
    """One engine per model, all three decoding at once, each with a mixed batch (modes, sizes, token limits,
    guard on and off): every page's tokens equal the one-sequence path's."""
    models = dict(ours, **{"deepseek-ocr": DeepseekOCR.from_pretrained(GOLDEN, dtype=torch.float32)})
    pages = [((900, 700), None, 20, None), ((500, 400), "base", 14, (3, 8)), ((1100, 1500), None, 9, None),
             ((640, 480), "base", 17, (2, 5))]
    engines = {f: Engine(m, max_batch=2, max_seq_len=8192) for f, m in models.items()}
    try:
        futures = {}
        for family, model in models.items():
            for i, (size, mode, n, guard) in enumerate(pages):
                ids, views = _inputs(model, size, mode, seed=i)
                ngram, window = guard or (None, None)
                request = PageRequest(ids, views, n, ngram, window, eos_token_id=-1)
                futures[family, i] = (engines[family].submit(request), (model, ids, views, n, ngram, window))
        for (family, i), (future, (model, ids, views, n, ngram, window)) in futures.items():
            expected = generate(model, ids, views, n, ngram_size=ngram, window_size=window, eos_id=-1)
            assert future.result(timeout=300).token_ids == expected.token_ids, (family, i)
    finally:
        for engine in engines.values():
            engine.close()
    assert engines["unlimited-ocr"].row_len == 8192  # R-SWA rows: prompt + window, capped by max_seq_len
