"""Prompt -> ids with a real `tokenizers` object carrying the official special tokens and config."""
from __future__ import annotations

import json
import shutil

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from conftest import GOLDEN, SPEC
from dsocr_model import DeepseekOCR, ImageViews
from dsocr_model.modeling.tokenizer import load_tokenizer

import torch


@pytest.fixture(scope="module")
def official_tokenizer_dir(tmp_path_factory):
    """A model dir whose tokenizer has the official 830 added tokens at their official ids."""
    d = tmp_path_factory.mktemp("official_tok")
    tok_cfg = json.loads((SPEC / "official_tokenizer_config.json").read_text())
    added = {int(i): t for i, t in tok_cfg["added_tokens_decoder"].items()}
    vocab = {t["content"]: i for i, t in added.items()}
    for c in range(32, 127):  # a byte-level-free toy base vocabulary: one id per printable char
        vocab[chr(c)] = 1000 + c
    vocab["\n"] = 1010
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<｜▁pad▁｜>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([t["content"] for _, t in sorted(added.items()) if t["special"]])
    tok.add_tokens([t["content"] for _, t in sorted(added.items()) if not t["special"]])
    tok.save(str(d / "tokenizer.json"))
    shutil.copy(SPEC / "official_tokenizer_config.json", d / "tokenizer_config.json")
    shutil.copy(SPEC / "official_special_tokens_map.json", d / "special_tokens_map.json")
    return d


def test_official_special_ids_come_from_the_tokenizer(official_tokenizer_dir):
    tok = load_tokenizer(official_tokenizer_dir)
    assert tok.convert_tokens_to_ids("<image>") == 128815
    assert tok.convert_tokens_to_ids("<|grounding|>") == 128820
    assert tok.convert_tokens_to_ids("<td>") == 128821
    model = DeepseekOCR.from_config(SPEC / "official_config.json", device="meta")
    model.attach_tokenizer(tok)
    assert (model.image_token_id, model.bos_token_id, model.eos_token_id) == (128815, 0, 1)


def test_prompt_layout_strip_split_bos_placeholders_no_eos(official_tokenizer_dir):
    model = DeepseekOCR.from_config(SPEC / "official_config.json", device="meta")
    model.attach_tokenizer(load_tokenizer(official_tokenizer_dir))
    gundam = ImageViews(torch.zeros(3, 1024, 1024), torch.zeros(6, 3, 640, 640), (2, 3))
    ids = model.build_input_ids("  <image>\n<|grounding|>Convert the document to markdown. ", [gundam]).tolist()
    text = [1010, 128820] + [1000 + ord(c) for c in "Convert the document to markdown."]
    assert ids == [0] + [128815] * 903 + text  # stripped: no trailing space id, no EOS
    base = ImageViews(torch.zeros(3, 1024, 1024))
    two = model.build_input_ids("A<image>B<image>", [base, gundam]).tolist()
    assert two == [0, 1065] + [128815] * 273 + [1066] + [128815] * 903


def test_golden_tokenizer_is_the_toy_char_tokenizer(golden_model):
    assert golden_model.image_token_id == 1000  # from config image_token_id
    assert golden_model.tokenizer.encode("\nFree OCR.", add_special_tokens=False) == [110, 170, 214, 201, 201, 132, 179, 167, 182, 146]
    assert golden_model.special_token_id("<|ref|>") == 1001


def test_tokenizer_missing_is_an_error(tmp_path):
    shutil.copy(GOLDEN / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
