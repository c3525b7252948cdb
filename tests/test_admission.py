"""Admission: prompts prefilled together (padded, into any rows) equal one at a time; uint8 views equal fp32
ones bit for bit; rows a decode step carries but does not use are never written."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import GOLDEN
from dsocr_model import preprocess_image
from dsocr_model.modeling.decoder import KVCache
from dsocr_model.runtime.admission import admit_group, prefill_chunks
from dsocr_model.runtime.batch import BatchState, Pending
from dsocr_model.runtime.engine import Engine, PageRequest
from dsocr_model.runtime.generate import decode_step, prefill
from test_engine import _requests, _simple


def test_prefill_chunks_bound_padded_tokens_and_keep_every_prompt():
    lengths = [915, 73, 915, 273, 273, 915, 4000]
    chunks = prefill_chunks(lengths, 2000)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for c in chunks:  # longest first; padded size bounded unless the chunk is one prompt
        assert len(c) == 1 or len(c) * lengths[c[0]] <= 2000
        assert all(lengths[c[0]] >= lengths[i] for i in c)
    assert [len(c) for c in prefill_chunks(lengths, 0)] == [1] * len(lengths)


def test_padded_prefill_into_scattered_rows_equals_one_prompt_at_a_time(golden_model):
    m = golden_model
    reqs = _requests(m)[:5]
    rows = [4, 0, 2, 5, 1]  # any rows, in any order
    wide = KVCache(m.config.decoder, 6, 1024, "cpu", torch.float32, spare_slot=True)
    jobs = [Pending(r, None, None, 0.0) for r in reqs]
    group = admit_group(m, wide, rows, jobs, max_tokens=100_000)
    assert sorted(group.rows) == sorted(rows) and not group.released
    assert len(group.logits) == 1  # one forward for all five prompts
    logits = torch.cat(group.logits)
    for row, job, T, got in zip(group.rows, group.jobs, group.prompt_lens, logits):
        one = KVCache(m.config.decoder, 1, 1024, "cpu", torch.float32)
        want = prefill(m, m.embed(job.req.input_ids[None], job.req.images), one)[0]
        assert T == len(job.req.input_ids)
        # GEMMs over 5 padded prompts vs one block differently on some CPUs: equal to fp32 rounding, not bitwise
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(wide.k[:, row, :, :T], one.k[:, 0, :, :T], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(wide.v[:, row, :, :T], one.v[:, 0, :, :T], atol=1e-4, rtol=1e-4)


def test_engine_tokens_do_not_depend_on_how_prompts_are_grouped(golden_model):
    reqs = _requests(golden_model)
    one_by_one = Engine(golden_model, max_batch=8, max_seq_len=1024, max_prefill_tokens=0).generate(reqs)
    together = Engine(golden_model, max_batch=8, max_seq_len=1024).generate(reqs)
    assert [o.token_ids for o in together] == [o.token_ids for o in one_by_one]


@pytest.mark.parametrize("mode", ["tiny", "gundam"])
def test_uint8_views_encode_bit_identically(golden_model, mode):
    img = Image.open(GOLDEN / "images" / "a4_1190x1684.png").convert("RGB")
    fp32 = preprocess_image(img, mode)
    u8 = preprocess_image(img, mode, normalize=False)
    assert u8.global_view.dtype == torch.uint8 and u8.num_image_tokens == fp32.num_image_tokens
    (a,), (b,) = golden_model.encode_images([fp32]), golden_model.encode_images([u8])  # same batch shape each
    assert torch.equal(a, b)


def test_a_decode_step_never_writes_rows_it_does_not_use(golden_model):
    """Rows being filled by admission sit among the decoded rows: their K/V must stay as admission wrote it."""
    m = golden_model
    cache = KVCache(m.config.decoder, 4, 256, "cpu", torch.float32, spare_slot=True)
    state = BatchState(4, m.config.decoder.vocab_size, m.device, None, True, cache.spare)
    job = Pending(_requests(m)[0], None, None, 0.0)
    group = admit_group(m, cache, [0, 2], [job, job], 16384)  # rows 0 and 2 live
    state.logits[[0, 2]] = torch.cat(group.logits)
    for row, T in zip(group.rows, group.prompt_lens):
        state.start(row, job, T, -1, {})
    state.reserved.add(1)  # row 1: being filled elsewhere; row 3: free
    cache.k[:, [1, 3]] = 7.0
    before = cache.k.clone()
    chosen = state.choose(4)
    step = state.next_inputs(chosen)
    assert step.n == 4 and step.slots[:, 0].tolist() == [T, cache.spare, T, cache.spare]
    decode_step(m, step.tokens, step.positions, cache.prefix(step.n), step.kv_len, step.slots, step.visible)
    usable = slice(0, cache.max_len)
    for row in (1, 3):
        assert torch.equal(cache.k[:, row, :, usable], before[:, row, :, usable])
    for row in (0, 2):  # the live rows' step wrote their next slot
        assert not torch.equal(cache.k[:, row, :, T], before[:, row, :, T])


def test_a_broken_admission_fails_its_pages_and_the_engine_goes_on(golden_model, monkeypatch):
    from dsocr_model.runtime import admission

    reqs = _requests(golden_model)[:3]
    engine = Engine(golden_model, max_batch=4, max_seq_len=1024)
    with monkeypatch.context() as m:
        m.setattr(admission, "admit_group", lambda *a: (_ for _ in ()).throw(RuntimeError("admission broke")))
        futures = [engine.submit(r) for r in reqs]
        for f in futures:
            with pytest.raises(RuntimeError, match="admission broke"):
                f.result(timeout=60)
    (out,) = engine.generate(reqs[:1])  # rows were given back: the engine still serves
    assert len(out.token_ids) == reqs[0].max_new_tokens or out.finish_reason == "eos"


def test_uint8_views_moved_to_a_float_dtype_are_normalised():
    img = Image.open(GOLDEN / "images" / "a4_1190x1684.png").convert("RGB")
    fp32, u8 = preprocess_image(img, "gundam", max_crops=6), preprocess_image(img, "gundam", max_crops=6, normalize=False)
    moved = u8.to(dtype=torch.float32)
    assert u8.is_tiled and torch.equal(moved.global_view, fp32.global_view) and torch.equal(moved.tiles, fp32.tiles)
    assert u8.to().global_view.dtype == torch.uint8  # no dtype asked: left as it is


def test_an_empty_prompt_is_refused_at_submit_not_prefilled_with_its_neighbours(golden_model):
    engine = Engine(golden_model, max_batch=2, max_seq_len=256)
    with pytest.raises(ValueError, match="empty"):
        engine.submit(PageRequest(torch.tensor([], dtype=torch.long), [], 4))


def test_tokens_are_handed_out_while_the_step_that_feeds_them_runs(golden_model, monkeypatch):
    """The next step is launched before the chosen ids reach the host (no host work between steps), and the
    tokens are unchanged by it, including a row that finishes and is refilled by the next page."""
    from dsocr_model.runtime.batch import BatchState as State

    events: list[str] = []
    step, emit = Engine._step, State.emit
    monkeypatch.setattr(Engine, "_step", lambda self, *a: (events.append("step"), step(self, *a))[1])
    monkeypatch.setattr(State, "emit", lambda self, *a: (events.append("emit"), emit(self, *a))[1])
    reqs = _requests(golden_model)
    outs = Engine(golden_model, max_batch=2, max_seq_len=1024).generate(reqs)  # more pages than rows
    assert [o.token_ids for o in outs] == [_simple(golden_model, r).token_ids for r in reqs]
    assert events[0] == "step" and "emit" in events
    first_emit = events.index("emit")
    assert events[:first_emit] == ["step"]  # the first tokens went out after the step that consumes them
