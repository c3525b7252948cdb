"""The engine's submission API: many threads, asyncio, token streams, failures kept to their own page."""
from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from dsocr_model import ImageViews, generate
from dsocr_model.runtime.memory import CPU_MAX_BATCH, kv_bytes_per_token, plan_max_batch
from dsocr_model.runtime.engine import Engine, PageRequest


def _text_request(model, text: str, n: int) -> PageRequest:
    return PageRequest(model.build_input_ids(text, []), [], max_new_tokens=n, eos_token_id=-1)


TEXTS = ["The quick brown fox", "Free OCR.", "Convert the document", "hello", "a b c d e f", "tables"]


@pytest.fixture(scope="module")
def expected(golden_model):
    return {t: generate(golden_model, golden_model.build_input_ids(t, []), [], 5 + i).token_ids
            for i, t in enumerate(TEXTS)}


def test_threads_submit_to_one_engine(golden_model, expected):
    engine = Engine(golden_model, max_batch=3, max_seq_len=128)
    results: dict[str, list[int]] = {}

    def caller(i: int, text: str) -> None:
        results[text] = engine.submit(_text_request(golden_model, text, 5 + i)).result(timeout=120).token_ids

    threads = [threading.Thread(target=caller, args=(i, t)) for i, t in enumerate(TEXTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_asyncio_submit_and_stream(golden_model, expected):
    engine = Engine(golden_model, max_batch=2, max_seq_len=128)

    async def main():
        outs = await asyncio.gather(*(engine.asubmit(_text_request(golden_model, t, 5 + i))
                                      for i, t in enumerate(TEXTS)))
        streamed = [tok async for tok in engine.astream(_text_request(golden_model, TEXTS[0], 5))]
        return outs, streamed

    outs, streamed = asyncio.run(main())
    assert [o.token_ids for o in outs] == [expected[t] for t in TEXTS]
    assert streamed == expected[TEXTS[0]]


def test_stream_yields_the_tokens_in_order(golden_model, expected):
    engine = Engine(golden_model, max_batch=2, max_seq_len=128)
    assert list(engine.stream(_text_request(golden_model, TEXTS[2], 7))) == expected[TEXTS[2]]


def test_a_failing_consumer_or_page_fails_alone(golden_model, expected):
    engine = Engine(golden_model, max_batch=4, max_seq_len=128)

    def broken(_tok: int) -> None:
        raise RuntimeError("consumer went away")

    bad_consumer = engine.submit(_text_request(golden_model, TEXTS[0], 5), on_token=broken)
    # An 8-pixel view passes the token count check but cannot go through SAM: its prefill fails.
    tiny_view = ImageViews(torch.zeros(3, 8, 8))
    bad_page = engine.submit(PageRequest(golden_model.build_input_ids("<image>\nFree OCR.", [tiny_view]),
                                         [tiny_view], max_new_tokens=3))
    good = engine.submit(_text_request(golden_model, TEXTS[1], 6))
    with pytest.raises(RuntimeError, match="consumer went away"):
        bad_consumer.result(timeout=120)
    with pytest.raises(RuntimeError, match="Kernel size"):
        bad_page.result(timeout=120)
    assert good.result(timeout=120).token_ids == expected[TEXTS[1]]


def test_cancelled_requests_are_skipped(golden_model, expected):
    """Requests cancelled while queued never reach a KV row: no token of theirs is ever decoded."""
    engine = Engine(golden_model, max_batch=1, max_seq_len=128)
    first = engine.submit(_text_request(golden_model, TEXTS[3], 8))
    decoded: list[int] = []
    waiting = [engine.submit(_text_request(golden_model, t, 5), on_token=decoded.append) for t in TEXTS[:3]]
    assert all(f.cancel() for f in waiting)  # still queued behind `first` (one row): cancellable
    assert first.result(timeout=120).token_ids == expected[TEXTS[3]]
    late = engine.submit(_text_request(golden_model, TEXTS[0], 5))
    assert late.result(timeout=120).token_ids == expected[TEXTS[0]]  # the engine went on past them
    assert decoded == [] and all(f.cancelled() for f in waiting)


def test_memory_budget_sizes_the_batch(golden_model):
    per_token = kv_bytes_per_token(golden_model)
    d = golden_model.config.decoder
    assert per_token == 2 * d.num_hidden_layers * d.hidden_size * 4  # K and V, fp32
    assert plan_max_batch(golden_model, 256, max_batch_tokens=1024) == 4
    assert plan_max_batch(golden_model, 256, max_batch_tokens=10) == 1
    assert Engine(golden_model, max_seq_len=256, max_batch_tokens=768).max_batch == 3
    assert Engine(golden_model, max_seq_len=64).max_batch == CPU_MAX_BATCH  # CPU default: one constant
    # From free memory: half of it, less the activation reserve, in rows of max_seq_len tokens, each with its
    # rows of the step's logits (two fp32 buffers, and the head's output and its fp32 copy in the graph pool) and
    # its guard state (id history and ban list of 1,024 int64 each, a ban bit per vocabulary id)
    free = 8 * 2**30
    guard = 2 * 8 * 1024 + d.vocab_size // 8
    row = per_token * 8192 + d.vocab_size * 4 * 4 + guard
    assert plan_max_batch(golden_model, 8192, free_bytes=free) == min(512, int((free * 0.5 - 3 * 2**30) // row))
    short = per_token * 16 + d.vocab_size * 4 * 4 + guard  # short rows: the logits are a large part of a row
    assert plan_max_batch(golden_model, 16, free_bytes=2 * (3 * 2**30 + 300 * short)) == 300
    assert plan_max_batch(golden_model, 8192, 0.9, free_bytes=free) > plan_max_batch(golden_model, 8192, free_bytes=free)
    # an fp8 cache: one byte an entry and an fp32 scale per head and token, so more rows fit
    assert kv_bytes_per_token(golden_model, "fp8") == 2 * d.num_hidden_layers * d.num_key_value_heads * (d.head_dim + 4)
    assert plan_max_batch(golden_model, 8192, free_bytes=free, kv_dtype="fp8") > plan_max_batch(golden_model, 8192,
                                                                                                free_bytes=free)
    with pytest.raises(MemoryError, match="no room"):
        plan_max_batch(golden_model, 8192, free_bytes=3 * 2**30)


def test_close_finishes_work_and_refuses_more(golden_model, expected):
    engine = Engine(golden_model, max_batch=2, max_seq_len=128)
    fut = engine.submit(_text_request(golden_model, TEXTS[0], 5))
    engine.close()
    assert fut.result(timeout=60).token_ids == expected[TEXTS[0]]
    assert engine._worker is None
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(_text_request(golden_model, TEXTS[1], 6))


def test_gpu_only_options_are_refused_on_cpu_with_a_clear_error(golden_model, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the interpreter is the one way to run the kernel on CPU
    for options in ({"kv_dtype": "fp8"}, {"ragged_attention": True}):
        with pytest.raises(ValueError, match="need CUDA"):
            Engine(golden_model, max_batch=2, max_seq_len=64, **options)
    with pytest.raises(ValueError, match="must be None"):
        Engine(golden_model, max_batch=2, max_seq_len=64, kv_dtype="int4")
