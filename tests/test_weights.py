"""Full-size layout, strict loading, shards, errors, hub resolution (no download)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import GOLDEN, SPEC
from dsocr_model import CheckpointError, DeepseekOCR, ModelNotFoundError, OCRConfig


def _official_keys() -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in open(SPEC / "checkpoint_keys.tsv") if not line.startswith("#")]
    return {r[0]: tuple(json.loads(r[1])) for r in rows}


def test_full_size_layout_matches_official_checkpoint_key_for_key():
    model = DeepseekOCR.from_config(SPEC / "official_config.json", device="meta")
    got = {k: tuple(v.shape) for k, v in model.to_checkpoint(model.state_dict()).items()}
    want = _official_keys()
    assert len(want) == 2710
    assert got == want
    assert sum(v.numel() for v in model.state_dict().values()) == 3_336_106_240
    assert list(model.buffers()) == []  # no extra (persistent or not) buffers


def test_official_config_resolves_reference_defaults():
    cfg = OCRConfig.load(SPEC / "official_config.json")
    d = cfg.decoder
    assert (d.hidden_size, d.num_hidden_layers, d.num_attention_heads, d.head_dim) == (1280, 12, 10, 128)
    assert (d.n_routed_experts, d.num_experts_per_tok, d.n_shared_experts, d.moe_intermediate_size) == (64, 6, 2, 896)
    assert (d.rms_norm_eps, d.rope_theta, d.routed_scaling_factor, d.norm_topk_prob) == (1e-6, 1e4, 1.0, False)
    assert cfg.sam.global_attn_indexes == (2, 5, 8, 11) and cfg.clip.width == 1024 and cfg.clip.num_positions == 257
    assert cfg.image_token_id is None
    assert OCRConfig.load(GOLDEN).image_token_id == 1000


def test_golden_checkpoint_loads_strictly_with_dtype(golden_model):
    assert golden_model.dtype == torch.float32 and golden_model.device.type == "cpu"
    ref = load_file(str(GOLDEN / "model.safetensors"))
    sd = golden_model.to_checkpoint(golden_model.state_dict())
    assert set(sd) == set(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    bf = DeepseekOCR.from_pretrained(GOLDEN, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf.parameters())


def test_sharded_checkpoint_with_index(tmp_path):
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(GOLDEN / f, tmp_path / f)
    state = load_file(str(GOLDEN / "model.safetensors"))
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: state[k].contiguous() for k in ks}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = DeepseekOCR.from_pretrained(tmp_path)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])


def test_mismatched_checkpoint_names_every_bad_tensor(tmp_path):
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(GOLDEN / f, tmp_path / f)
    state = load_file(str(GOLDEN / "model.safetensors"))
    del state["model.norm.weight"], state["model.layers.1.mlp.experts.3.up_proj.weight"]
    state["model.extra.weight"] = torch.zeros(2)
    state["lm_head.weight"] = torch.zeros(7, 128)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        DeepseekOCR.from_pretrained(tmp_path)
    msg = str(e.value)
    for needle in ("missing: model.norm.weight", "missing: model.layers.1.mlp.experts.3.up_proj.weight",
                   "unexpected: model.extra.weight", "mis-shaped: lm_head.weight", "2 missing, 1 unexpected, 1 mis-shaped"):
        assert needle in msg


def test_missing_local_dir_and_offline_hub_id_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        DeepseekOCR.from_pretrained(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="--local-dir"):
        DeepseekOCR.from_pretrained("deepseek-ai/DeepSeek-OCR")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        DeepseekOCR.from_pretrained(tmp_path / "empty")
