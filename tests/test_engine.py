"""The batched engine gives exactly the one-sequence greedy tokens, whatever the batch mix."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import GOLDEN
from dsocr_model import preprocess_image, generate
from dsocr_model.runtime.engine import Engine, PageRequest

IMAGES = ["doc_300x200", "a4_1190x1684", "wide_4000x1000", "doc_1000x700"]


def _requests(model):
    reqs = []
    modes = ["tiny", "gundam", "small", "base", "gundam", "tiny"]
    for i, mode in enumerate(modes):
        img = Image.open(GOLDEN / "images" / f"{IMAGES[i % len(IMAGES)]}.png").convert("RGB")
        views = [preprocess_image(img, mode)]
        prompt = "<image>\nFree OCR." if i % 2 else "<image>\n<|grounding|>Convert the document to markdown."
        reqs.append(PageRequest(model.build_input_ids(prompt, views), views, max_new_tokens=6 + 5 * i))
    reqs.append(PageRequest(model.build_input_ids("The quick brown fox", []), [], max_new_tokens=9))
    return reqs


def _simple(model, r: PageRequest):
    return generate(model, r.input_ids, r.images, r.max_new_tokens, ngram_size=r.ngram_size,
                                 window_size=r.window_size, whitelist=r.whitelist)


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_mixed_batch_equals_simple_path(golden_model, max_batch):
    reqs = _requests(golden_model)
    # Two requests stop early at EOS: use as their EOS an id the simple path emits mid-way.
    for k in (1, 4):
        ref = _simple(golden_model, reqs[k]).token_ids
        reqs[k].eos_token_id = ref[3]
    outs = Engine(golden_model, max_batch=max_batch, max_seq_len=1024).generate(reqs)
    for r, o in zip(reqs, outs):
        want_ids = _simple_with_eos(golden_model, r)
        assert o.token_ids == want_ids
        assert o.finish_reason == ("eos" if r.eos_token_id is not None else "length")
    assert outs[1].token_ids[-1] == reqs[1].eos_token_id and len(outs[1].token_ids) <= 4


def _simple_with_eos(model, r):
    eos = model.eos_token_id
    try:
        if r.eos_token_id is not None:
            model.eos_token_id = r.eos_token_id
        return _simple(model, r).token_ids
    finally:
        model.eos_token_id = eos


def test_ngram_guard_in_engine_equals_simple_path(golden_model):
    reqs = _requests(golden_model)[:4]
    for r in reqs:
        r.ngram_size, r.window_size, r.max_new_tokens = 2, 8, 30
        r.whitelist = {717}
    outs = Engine(golden_model, max_batch=2, max_seq_len=1024).generate(reqs)
    for r, o in zip(reqs, outs):
        assert o.token_ids == _simple(golden_model, r).token_ids
        assert o.timings["total_s"] >= o.timings["ttft_s"] > 0


def test_engine_rejects_oversized_and_windowless_requests(golden_model):
    ids = golden_model.build_input_ids("The quick brown fox", [])
    with pytest.raises(ValueError, match="max_seq_len"):
        Engine(golden_model, max_batch=1, max_seq_len=32).generate([PageRequest(ids, [], max_new_tokens=40)])
    with pytest.raises(ValueError, match="window_size"):
        Engine(golden_model, max_batch=1, max_seq_len=64).generate([PageRequest(ids, [], 4, ngram_size=3)])


def test_engine_rejects_placeholders_without_images(golden_model):
    ids = torch.tensor([0] + [golden_model.image_token_id] * 5 + [110])
    with pytest.raises(ValueError, match="5 placeholders"):
        Engine(golden_model, max_batch=1, max_seq_len=64).generate([PageRequest(ids, [], max_new_tokens=2)])


def test_a_request_the_batched_guard_cannot_take_fails_alone(golden_model):
    """ngram_size 1 (or larger than its window) is refused at submit; the pages in flight are untouched."""
    engine = Engine(golden_model, max_batch=4, max_seq_len=256)
    good = [PageRequest(golden_model.build_input_ids(t, []), [], 6) for t in ("The quick", "brown fox")]
    futures = [engine.submit(r) for r in good]
    for n, w in ((1, 8), (9, 8)):
        with pytest.raises(ValueError, match="only this request fails"):
            engine.submit(PageRequest(good[0].input_ids, [], 6, ngram_size=n, window_size=w))
    with pytest.raises(ValueError, match="whitelist holds 65 ids"):  # the per-row whitelist the device keeps
        engine.submit(PageRequest(good[0].input_ids, [], 6, ngram_size=3, window_size=8, whitelist=range(65)))
    engine.submit(PageRequest(good[0].input_ids, [], 6, ngram_size=3, window_size=8, whitelist=[5] * 70)).result()
    assert [f.result().token_ids for f in futures] == [_simple(golden_model, r).token_ids for r in good]


def test_page_views_are_freed_once_prefilled(golden_model):
    """A decoding row keeps no reference to its request's image views (~42 MB per Gundam page in fp32)."""
    import gc
    import threading
    import weakref

    views = preprocess_image(Image.new("RGB", (300, 200), "white"), "tiny")
    watch = weakref.ref(views.global_view)
    started = threading.Event()
    req = PageRequest(golden_model.build_input_ids("<image>\nFree OCR.", [views]), [views], 40, eos_token_id=-1)
    engine = Engine(golden_model, max_batch=2, max_seq_len=256)
    future = engine.submit(req, on_token=lambda t: started.set())
    del req, views
    assert started.wait(30)
    gc.collect()
    alive_while_decoding = watch() is not None
    future.result()
    assert not alive_while_decoding


def test_a_failing_fused_token_choice_falls_back_to_the_eager_one(caplog):
    """Where the fused choice's kernels cannot run (say Triton cannot build them for a GPU), the batch state logs a
    warning and chooses eagerly from then on, with the same ids."""
    from concurrent.futures import Future

    from dsocr_model.runtime.batch import BatchState, Pending

    def broken(*args):
        raise RuntimeError("no kernel for this GPU")

    states = [BatchState(2, 50, torch.device("cpu")) for _ in range(2)]
    request = PageRequest(torch.zeros(4, dtype=torch.long), (), 10, 2, 6, (), -1)
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    for state in states:
        for row in range(2):
            state.start(row, Pending(request, Future(), None, 0.0), 4, -1, {})
        state.logits[:2] = logits
    states[1].fused = broken
    with caplog.at_level("WARNING"):
        assert torch.equal(states[1].choose(2), states[0].choose(2))
    assert states[1].fused is None and "choosing eagerly from now on" in caplog.text
