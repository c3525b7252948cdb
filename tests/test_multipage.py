"""Unlimited-OCR's multi-page passes: several pages in one request, the answer split back on <PAGE>, pages
that cannot be split read again alone, the context budget checked up front; with a scripted engine (the
splitting) and with the real tiny model (the packing, and the fallback on its unsplittable output)."""
from __future__ import annotations

import threading

import pytest

from conftest import FIXTURES
from dsocr_loaders import OCRPipeline, OCRResponse, OCRSettings
from dsocr_loaders.ocr.multipage import split_pages
from dsocr_model.family.unlimited_ocr import UNLIMITED_OCR
from test_pipeline import FakeEngine

PDF = FIXTURES / "pdf" / "multi_page.pdf"  # 5 A4 pages


def _page_answer(k: int) -> str:
    """One page as Unlimited-OCR writes it (FAMILY.md §3.6): title and text blocks with boxes on 0-999."""
    return (f"<|det|>title [100, {50 + k}, 900, 120]<|/det|>Page {k + 1} heading\n"
            f"<|det|>text [100, 200, 900, 400]<|/det|>Body of page {k + 1}.\n")


def _pass_answer(pages: int, skip: int | None = None) -> str:
    return "".join(f"<PAGE>{_page_answer(k)}" for k in range(pages) if k != skip)


class UnlimitedEngine(FakeEngine):
    """Scripted answers in Unlimited-OCR's syntax; records every request."""

    def __init__(self, reply) -> None:
        super().__init__(reply)
        self.spec, self.requests, self.lock2 = UNLIMITED_OCR, [], threading.Lock()

    def submit(self, request):
        with self.lock2:
            self.requests.append(request)
        return super().submit(request)


def _single_or_pass(pass_reply):
    def reply(request, n):
        if len(request.images) == 1:
            return OCRResponse(_page_answer(int(request.image.info.get("k", 0))), "eos", 40)
        return pass_reply(request)
    return reply


def test_split_pages():
    text = _pass_answer(3)
    assert split_pages(text, 3, "eos") == [_page_answer(k) for k in range(3)]
    assert split_pages(text, 4, "eos") == [None] * 4  # a page went missing: which one is unknown
    assert split_pages("preamble" + text, 3, "eos")[0] == _page_answer(0)  # text before the first marker is dropped
    cut = text[:-10]
    assert split_pages(cut, 3, "length") == [_page_answer(0), _page_answer(1), None]  # the cut-off part goes again
    assert split_pages(_pass_answer(1), 3, "length") == [None, None, None]
    assert split_pages(_pass_answer(5), 3, "length") == [None, None, None]


def test_a_three_page_pass_gives_three_ordered_page_results_with_boxes_in_page_units():
    engine = UnlimitedEngine(_single_or_pass(lambda r: OCRResponse(_pass_answer(len(r.images)), "eos", 99)))
    results = list(OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=3)).run(PDF, pages="1-3"))
    assert [r.page for r in results] == [0, 1, 2]
    assert len(engine.requests) == 1  # one pass, no page read again
    request = engine.requests[0]
    assert len(request.images) == 3 and request.prompt == "<image><image><image>Multi page parsing."
    assert request.mode == "base" and (request.ngram_size, request.window_size) == (35, 1024)
    for k, r in enumerate(results):
        assert r.status == "ok" and r.markdown.startswith(f"Page {k + 1} heading")
        title = r.elements[0]
        assert title.label == "title" and title.bbox_norm == (100, 50 + k, 900, 120)
        assert title.bbox == (round(100 / 999 * r.width, 2), round((50 + k) / 999 * r.height, 2),
                              round(900 / 999 * r.width, 2), round(120 / 999 * r.height, 2))
        assert r.unit == "pt" and r.width < 700  # A4 in PDF points, not model pixels
        assert r.vision_tokens == 273 and r.settings["pages_per_pass"] == 3 and r.settings["mode"] == "base"


def test_passes_group_up_to_n_pages_and_the_rest_go_together():
    engine = UnlimitedEngine(_single_or_pass(lambda r: OCRResponse(_pass_answer(len(r.images)), "eos", 99)))
    results = list(OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=2)).run(PDF))
    assert [r.page for r in results] == [0, 1, 2, 3, 4] and all(r.status == "ok" for r in results)
    assert [len(q.images) for q in engine.requests] == [2, 2, 1]  # the last page alone, in the single-page mode
    last = engine.requests[-1]
    assert (last.mode, last.prompt, last.ngram_size, last.window_size) == ("gundam", "<image>document parsing.", 35, 128)
    assert results[4].vision_tokens == UNLIMITED_OCR.image_token_count(*last.image.size) > 273


def test_an_unsplittable_answer_reads_every_page_alone():
    engine = UnlimitedEngine(_single_or_pass(lambda r: OCRResponse(_pass_answer(3, skip=1), "eos", 99)))
    results = list(OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=3)).run(PDF, pages="1-3"))
    assert [r.page for r in results] == [0, 1, 2] and all(r.status == "ok" for r in results)
    assert [len(q.images) for q in engine.requests] == [3, 1, 1, 1]
    assert all("pages_per_pass" not in r.settings for r in results)


def test_a_truncated_pass_reads_only_the_cut_page_again():
    engine = UnlimitedEngine(_single_or_pass(lambda r: OCRResponse(_pass_answer(3)[:-12], "length", 99)))
    results = list(OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=3)).run(PDF, pages="1-3"))
    assert [len(q.images) for q in engine.requests] == [3, 1]
    assert [r.settings.get("pages_per_pass") for r in results] == [3, 3, None]
    assert results[2].status == "ok" and results[2].markdown.endswith("Body of page 1.")  # its own single answer


def test_a_failed_pass_fails_its_pages_only():
    def reply(request):
        raise RuntimeError("server fell over")
    engine = UnlimitedEngine(_single_or_pass(reply))
    results = list(OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=2)).run(PDF, pages="1-3"))
    assert [r.status for r in results] == ["error", "error", "ok"]
    assert "server fell over" in results[0].error


def test_budget_and_family_are_checked_up_front():
    engine = UnlimitedEngine(lambda r, n: OCRResponse("", "eos", 1))
    with pytest.raises(ValueError, match="at most 89 pages per pass"):
        OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=100))
    OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=40, max_new_tokens=20000))  # 40 x 273 + 20000 fits 32768
    with pytest.raises(ValueError, match="one page per pass"):
        OCRPipeline(FakeEngine(), ocr=OCRSettings(pages_per_pass=2))  # v1
    with pytest.raises(ValueError, match="multi-page prompt"):
        OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=2, prompt="<image>Free OCR."))


def test_real_tiny_model_packs_pages_into_one_pass_and_falls_back_alone(tmp_path):
    """The real engine on the tiny Unlimited-OCR checkpoint: the pass is one prefill over 3 x 273 image
    tokens; its random output has no <PAGE> markers, so every page is then read alone."""
    from dsocr_loaders import LocalEngine
    from tiny_family import write_checkpoint

    checkpoint = write_checkpoint("unlimited-ocr", tmp_path / "unlimited")
    seen = []
    with LocalEngine(str(checkpoint), device="cpu", max_batch=4) as engine:
        runtime_submit = None

        def spy(page, *a, **k):
            seen.append(len(page.input_ids))
            return runtime_submit(page, *a, **k)
        engine.load()
        runtime_submit, engine._engine.submit = engine._engine.submit, spy
        pipeline = OCRPipeline(engine, ocr=OCRSettings(pages_per_pass=3, max_new_tokens=6, mode="base"))
        results = list(pipeline.run(PDF, pages="1-3"))
    assert [r.page for r in results] == [0, 1, 2]
    assert all(r.status in ("ok", "truncated", "empty") for r in results), [r.error for r in results]
    pass_prompt = 1 + 3 * 273  # BOS + three base-mode pages, then "Multi page parsing."
    assert pass_prompt < seen[0] < pass_prompt + 32
    assert seen[1:] == [seen[1]] * 3 and seen[1] < 300  # then each page alone (base mode: 273 + prompt)
