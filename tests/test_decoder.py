"""Cache equivalence, MoE dispatch equivalence, dtype coverage on tiny random models."""
from __future__ import annotations

import pytest
import torch

from conftest import GOLDEN, tiny_config_dict
from dsocr_model import DeepseekOCR, generate, preprocess_image
from dsocr_model.modeling import moe as moe_mod
from dsocr_model.modeling.decoder import KVCache
from dsocr_model.modeling.moe import moe_reference

from PIL import Image


@pytest.fixture(scope="module")
def random_model():
    # More experts/top-k than the golden config, so dispatch covers idle and busy experts.
    cfg = tiny_config_dict(n_routed_experts=16, num_experts_per_tok=4)
    return DeepseekOCR.from_config(cfg, device="cpu", dtype=torch.float32, seed=0)


def _uncached_greedy(model, ids, views, n):
    out = []
    x = model.embed(ids[None], views)  # vision once; then append token embeddings
    for _ in range(n):
        pos = torch.arange(x.shape[1])[None]
        nxt = int(model.lm_head(model.hidden(x, pos))[0, -1].float().argmax())
        out.append(nxt)
        x = torch.cat([x, model.model.embed_tokens(torch.tensor([[nxt]]))], dim=1)
    return out


def test_cached_decoding_equals_uncached_full_forward(golden_model):
    views = [preprocess_image(Image.new("RGB", (300, 200), "white"), "tiny")]
    ids = golden_model.build_input_ids("<image>\nFree OCR.", views)
    with torch.inference_mode():
        assert generate(golden_model, ids, views, max_new_tokens=12).token_ids == _uncached_greedy(golden_model, ids, views, 12)


def test_chunked_prefill_with_cache_matches_single_pass(random_model):
    m = random_model
    ids = torch.randint(4, 900, (1, 40))
    with torch.inference_mode():
        full = m.hidden(m.model.embed_tokens(ids), torch.arange(40)[None])
        cache = KVCache(m.config.decoder, 1, 64, "cpu", torch.float32)
        a = m.hidden(m.model.embed_tokens(ids[:, :25]), torch.arange(25)[None], cache)
        b = m.hidden(m.model.embed_tokens(ids[:, 25:]), torch.arange(25, 40)[None], cache)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", [1, 3, 37, 300])  # 1 and 3 take the gather path, others grouped GEMM
def test_vectorised_moe_equals_naive_per_token_loop(random_model, tokens):
    moe = random_model.model.layers[1].mlp
    x = torch.randn(tokens, moe.gate.in_features)
    with torch.inference_mode():
        torch.testing.assert_close(moe(x), moe_reference(moe, x), atol=1e-5, rtol=1e-5)


def test_both_dispatch_paths_agree(random_model, monkeypatch):
    moe = random_model.model.layers[2].mlp
    x = torch.randn(5, moe.gate.in_features)
    with torch.inference_mode():
        w13, w2 = moe.experts.gate_up_proj, moe.experts.down_proj
        idx = torch.topk(torch.randn(5, w13.shape[0]), moe.top_k).indices
        torch.testing.assert_close(moe_mod.gathered_experts(x, idx, w13, w2), moe_mod.grouped_experts(x, idx, w13, w2))


def test_experts_are_stacked_once_by_sanitize_and_follow_moves(golden_model):
    from safetensors.torch import load_file

    ckpt = load_file(str(GOLDEN / "model.safetensors"))
    module_state = DeepseekOCR.sanitize(dict(ckpt))
    assert not any(".experts.0." in k for k in module_state)  # per-expert keys are gone: stacked
    assert golden_model.state_dict().keys() == module_state.keys()
    back = DeepseekOCR.to_checkpoint(module_state)
    assert back.keys() == ckpt.keys() and all(torch.equal(back[k], ckpt[k]) for k in ckpt)
    clone = DeepseekOCR.from_config(tiny_config_dict(), device="cpu", seed=1).to(torch.bfloat16)
    moe = clone.model.layers[1].mlp
    assert moe.experts.gate_up_proj.dtype == torch.bfloat16  # a move needs no re-stacking: no views to go stale
    x = torch.randn(7, moe.gate.in_features, dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(moe(x).float(), moe_reference(moe, x).float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_end_to_end_runs_on_cpu_in_fp32_and_bf16(dtype):
    model = DeepseekOCR.from_config(tiny_config_dict(), device="cpu", dtype=dtype, seed=0)
    views = [preprocess_image(Image.new("RGB", (1300, 900), "white"), "gundam")]
    n = views[0].num_image_tokens
    ids = torch.tensor([0] + [1000] * n + [110, 170, 214])
    logits = model.forward_logits(ids, views)
    assert logits.dtype == torch.float32 and logits.shape == (len(ids), 1024) and torch.isfinite(logits).all()
    ref = DeepseekOCR.from_config(tiny_config_dict(), device="cpu", dtype=torch.float32, seed=0).forward_logits(ids, views)
    cos = torch.nn.functional.cosine_similarity(logits, ref, dim=-1)  # bf16 must compute the same thing, roughly
    assert cos.min() > (0.99 if dtype == torch.bfloat16 else 0.99999), cos.min()
    gen = generate(model, ids, views, max_new_tokens=5)
    assert len(gen.token_ids) <= 5 and gen.finish_reason in ("eos", "length")


def test_eos_stops_generation_and_is_kept(golden_model):
    ids = golden_model.build_input_ids("The quick brown fox", [])
    first = generate(golden_model, ids, [], max_new_tokens=3).token_ids
    gen = generate(golden_model, ids, [], max_new_tokens=10, whitelist=())
    # Force an EOS by making the model's eos id equal the third greedy token.
    eos_before = golden_model.eos_token_id
    try:
        golden_model.eos_token_id = first[2]
        stopped = generate(golden_model, ids, [], max_new_tokens=10)
    finally:
        golden_model.eos_token_id = eos_before
    assert stopped.token_ids == first and stopped.finish_reason == "eos"
    assert gen.finish_reason == "length" and len(gen.token_ids) == 10
