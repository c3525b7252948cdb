"""The n-gram guard reproduces the official vLLM-path processor and transformers' processor cases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import GOLDEN
from PIL import Image

from dsocr_model import banned_ngram_tokens, preprocess_image, generate
from dsocr_model.runtime.ngram import apply_ngram_guard

CASES = json.loads((GOLDEN / "ngram_cases.json").read_text())


@pytest.mark.parametrize("case", CASES["official_vllm_cases"], ids=lambda c: c["name"])
def test_official_windowed_guard(case):
    banned = banned_ngram_tokens(case["generated_ids"], ngram_size=case["ngram_size"],
                                 window_size=case["window_size"], whitelist=set(case["whitelist"]))
    assert banned == set(case["banned_ids"])


@pytest.mark.parametrize("case", CASES["transformers_cases"], ids=lambda c: c["name"])
def test_transformers_whole_sequence_guard(case):
    banned = banned_ngram_tokens(case["full_sequence_ids"], ngram_size=case["ngram_size"], window_size=None)
    assert banned == set(case["banned_ids"])


def test_guard_sets_banned_logits_to_minus_inf():
    logits = torch.from_numpy(np.load(GOLDEN / "ngram_logits_in.npz")["logits_in"])
    case = CASES["official_vllm_cases"][1]
    out = apply_ngram_guard(logits, case["generated_ids"], case["ngram_size"], case["window_size"], case["whitelist"])
    assert torch.isinf(out[case["banned_ids"]]).all()
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[case["banned_ids"]] = False
    assert torch.equal(out[keep], logits[keep])


def test_guard_changes_generation(golden_model):
    views = [preprocess_image(Image.open(GOLDEN / "images" / "doc_300x200.png").convert("RGB"), "tiny")]
    ids = golden_model.build_input_ids("<image>\nFree OCR.", views)
    free = generate(golden_model, ids, views, max_new_tokens=40).token_ids
    guarded = generate(golden_model, ids, views, max_new_tokens=40, ngram_size=1, window_size=40).token_ids
    assert len(set(free)) < len(free)  # unguarded greedy output of this model repeats tokens
    assert len(set(guarded)) == len(guarded)  # a 1-gram guard over the whole window forbids any repeat
    assert guarded[0] == free[0]  # nothing to ban at the first step
