"""The model reproduces the official reference on every golden case (golden/README.md §2-3)."""
from __future__ import annotations

import pytest
import torch
from conftest import load_golden_case
from dsocr_model import generate
from dsocr_model.modeling.moe import MoE, route

VISION_ATOL, MODEL_ATOL = 1e-4, 5e-4
CASES = ["tiny_doc300x200", "small_doc300x200", "base_doc300x200", "large_doc300x200", "gundam_a4", "text_only"]


_case = load_golden_case


def _close(got, want, atol):
    assert got.shape == want.shape
    diff = (got.float() - want.float()).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


@pytest.mark.parametrize("name", CASES)
def test_input_ids_and_generation(name, golden_model, golden_cases, golden_pixels):
    c, ref, views, prompt = _case(name, golden_cases, golden_pixels)
    ids = golden_model.build_input_ids(prompt, views)
    assert ids.tolist() == ref["input_ids"].tolist()
    assert torch.equal(ids == golden_model.image_token_id, ref["images_seq_mask"])
    gen = generate(golden_model, ids, views, max_new_tokens=24, keep_logits=True)
    assert gen.token_ids == ref["generated_ids"].tolist() == c["generated_ids"]
    assert gen.finish_reason == "length"
    _close(torch.stack(gen.step_logits), ref["step_logits"], MODEL_ATOL)
    assert generate(golden_model, ids, views, max_new_tokens=24).token_ids == gen.token_ids


@pytest.mark.parametrize("name", CASES)
def test_prefill_logits_and_hidden_states(name, golden_model, golden_cases, golden_pixels):
    _, ref, views, prompt = _case(name, golden_cases, golden_pixels)
    ids = golden_model.build_input_ids(prompt, views)
    hidden = []
    hooks = [golden_model.model.embed_tokens.register_forward_hook(lambda m, i, o: hidden.append(None))]
    hooks += [layer.register_forward_hook(lambda m, i, o: hidden.append(o[0])) for layer in golden_model.model.layers]
    gates = {}
    for li, layer in enumerate(golden_model.model.layers):
        if isinstance(layer.mlp, MoE):
            hooks.append(layer.mlp.register_forward_hook(
                lambda m, i, o, li=li: gates.__setitem__(li, route(i[0][0], m.gate.weight, m.top_k, m.scale))))
    embeds = []
    hooks.append(golden_model.model.layers[0].register_forward_pre_hook(lambda m, a: embeds.append(a[0][0])))
    try:
        logits = golden_model.forward_logits(ids, views)
    finally:
        for h in hooks:
            h.remove()
    _close(logits[-1], ref["prefill_last_logits"], MODEL_ATOL)
    layers_out = [h for h in hidden if h is not None]
    rows = torch.stack([embeds[0][-1], layers_out[0][-1], layers_out[1][-1], golden_model.model.norm(layers_out[2])[-1]])
    _close(rows, ref["prefill_last_hidden_per_layer"], MODEL_ATOL)
    if "prefill_logits_all" in ref:
        _close(logits, ref["prefill_logits_all"], MODEL_ATOL)
        all_rows = torch.stack([embeds[0], layers_out[0], layers_out[1], golden_model.model.norm(layers_out[2])])
        _close(all_rows, ref["prefill_hidden_states_all"], MODEL_ATOL)
    for li in (1, 2):
        key = f"gate.layer{li}.topk_idx_sorted"
        if key in ref:
            w, idx = gates[li]
            idx_sorted, order = idx.sort(dim=-1)
            assert torch.equal(idx_sorted, ref[key])
            _close(w.gather(-1, order), ref[f"gate.layer{li}.topk_weight_sorted"], VISION_ATOL)


@pytest.mark.parametrize("name", [n for n in CASES if n != "text_only"])
def test_vision_outputs_and_image_block(name, golden_model, golden_cases, golden_pixels):
    c, ref, views, _ = _case(name, golden_cases, golden_pixels)
    m = golden_model.model
    with torch.inference_mode():
        g = views[0].global_view[None]
        sam = m.sam_model(g)
        _close(sam, ref["sam_out_global"], VISION_ATOL)
        _close(m.vision_model(sam), ref["clip_out_global"], VISION_ATOL)
        if views[0].is_tiled:
            sam_t = m.sam_model(views[0].tiles)
            _close(sam_t, ref["sam_out_tiles"], VISION_ATOL)
            _close(m.vision_model(sam_t), ref["clip_out_tiles"], VISION_ATOL)
    block = golden_model.encode_images(views)[0]
    _close(block, ref["image_block"], VISION_ATOL)
    layout = c["block_layout"]
    assert block.shape[0] == layout["n_tokens"] == views[0].num_image_tokens
    for pos in layout["newline_positions"]:
        assert torch.equal(block[pos], m.image_newline)
    for pos in layout["separator_positions"]:
        assert torch.equal(block[pos], m.view_seperator)


def test_vision_stages_tiny_case(golden_model, golden_cases, golden_pixels):
    _, ref, views, _ = _case("tiny_doc300x200", golden_cases, golden_pixels)
    sam, clip = golden_model.model.sam_model, golden_model.model.vision_model
    got = {}
    hooks = [sam.patch_embed.register_forward_hook(lambda m, i, o: got.__setitem__("deep.sam.patch_embed_out", o)),
             sam.blocks[0].register_forward_pre_hook(lambda m, a: got.__setitem__("deep.sam.after_pos_embed", a[0])),
             sam.neck.register_forward_hook(lambda m, i, o: got.__setitem__("deep.sam.neck_out", o)),
             sam.net_2.register_forward_hook(lambda m, i, o: got.__setitem__("deep.sam.net2_out", o)),
             clip.embeddings.register_forward_hook(lambda m, i, o: got.__setitem__("deep.clip.embeddings_out", o)),
             clip.pre_layrnorm.register_forward_hook(lambda m, i, o: got.__setitem__("deep.clip.pre_layrnorm_out", o))]
    for b, blk in enumerate(sam.blocks):
        hooks.append(blk.register_forward_hook(lambda m, i, o, b=b: got.__setitem__(f"deep.sam.block{b}_out", o)))
    for li, layer in enumerate(clip.transformer.layers):
        hooks.append(layer.register_forward_hook(lambda m, i, o, li=li: got.__setitem__(f"deep.clip.layer{li}_out", o)))
    try:
        golden_model.encode_images(views)
    finally:
        for h in hooks:
            h.remove()
    stage_keys = [k for k in ref if k.startswith("deep.")]
    assert len(stage_keys) == 12  # patch embed, pos, 4 blocks, neck, net_2, 4 CLIP stages
    for k in stage_keys:
        _close(got[k], ref[k], VISION_ATOL)


def test_placeholder_count_mismatch_is_a_clear_error(golden_model, golden_cases, golden_pixels):
    _, _, views, _ = _case("tiny_doc300x200", golden_cases, golden_pixels)
    ids = golden_model.build_input_ids("<image>\nFree OCR.", views)
    with pytest.raises(ValueError, match="placeholders"):
        golden_model.forward_logits(ids[:-12], [])
    with pytest.raises(ValueError, match="73 image tokens"):
        golden_model.forward_logits(torch.cat([ids[:1], ids[2:]]), views)
    with pytest.raises(ValueError, match="<image> tags"):
        golden_model.build_input_ids("Free OCR.", views)
