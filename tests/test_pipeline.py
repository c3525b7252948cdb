"""OCRPipeline: page order, statuses, numbers and errors over a fake engine; then the real model end to end."""
from __future__ import annotations

import asyncio
import random
import sys
import subprocess
import threading
import time
from concurrent.futures import Future

import pymupdf
import pytest
import torch

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import OCRPipeline, OCRResponse, PageRangeError, PasswordError, EngineSettings, OCRSettings

PDF = FIXTURES / "pdf"
EXAMPLE = (FIXTURES / "deepseek_raw" / "docling_md_deepseek" / "sources" / "deepseek_example.md").read_text()


class FakeEngine:
    """Answers from other threads after random delays (so completion order is shuffled)."""

    identity = "fake:example"

    def __init__(self, reply=lambda req, n: OCRResponse(EXAMPLE, "eos", 321), seed: int = 0) -> None:
        self.reply, self.rng = reply, random.Random(seed)
        self.calls, self.outstanding, self.peak = 0, 0, 0
        self.lock = threading.Lock()

    def submit(self, request) -> Future:
        fut: Future = Future()
        with self.lock:
            n = self.calls
            self.calls += 1
            self.outstanding += 1
            self.peak = max(self.peak, self.outstanding)
        delay = self.rng.uniform(0, 0.02)

        def answer():
            time.sleep(delay)
            with self.lock:
                self.outstanding -= 1
            try:
                fut.set_result(self.reply(request, n))
            except Exception as e:
                fut.set_exception(e)

        threading.Thread(target=answer, daemon=True).start()
        return fut


def test_pages_in_order_with_metadata_and_numbers():
    engine = FakeEngine()
    results = list(OCRPipeline(engine, max_in_flight=3).run(PDF / "multi_page.pdf"))
    assert [r.page for r in results] == [0, 1, 2, 3, 4] and engine.peak <= 3
    r = results[2]
    assert r.status == "ok" and r.finish_reason == "eos" and r.unit == "pt" and r.total_pages == 5
    assert r.page_label == "3" and r.source.endswith("multi_page.pdf")
    assert r.doc_metadata["creationdate"].startswith("2025-01-24")
    valid = int(256 * 1191 / 1684) + 6 * 100  # padding discounted on the global view, plus 2x3 tiles
    assert r.vision_tokens == 903 and r.valid_vision_tokens == valid == 781
    assert r.text_tokens == 321 and r.compression == round(321 / 781, 2)
    assert r.settings["model"] == "fake:example" and r.settings["task"] == "markdown"
    assert r.elements[1].bbox == pytest.approx((217 / 999 * r.width, 209 / 999 * r.height,
                                                520 / 999 * r.width, 225 / 999 * r.height), abs=0.01)
    assert {"render_s", "parse_s"} <= set(r.timings)


def test_prompt_mode_and_limits_reach_the_engine():
    seen = []

    def reply(req, n):
        seen.append(req)
        return OCRResponse("text", "eos", 2)

    pipe = OCRPipeline(FakeEngine(reply), ocr=OCRSettings(task="locate", locate_text="Table 1", mode="base", max_new_tokens=100, ngram_size=30, window_size=90))
    (r,) = pipe.run(PDF / "2305.03393v1-pg9.pdf")
    (req,) = seen
    assert req.prompt == "<image>\nLocate <|ref|>Table 1<|/ref|> in the image."
    assert (req.mode, req.max_new_tokens, req.ngram_size, req.window_size) == ("base", 100, 30, 90)
    assert req.whitelist == (128821, 128822) and req.image.size == (1224, 1584)
    assert r.vision_tokens == 273 and r.settings["mode"] == "base"
    with pytest.raises(ValueError, match="locate_text"):
        OCRPipeline(FakeEngine(), ocr=OCRSettings(task="locate"))
    with pytest.raises(ValueError, match="has no prompt"):
        OCRPipeline(FakeEngine(), ocr=OCRSettings(task="summarise"))
    with pytest.raises(ValueError, match="unknown mode"):
        OCRPipeline(FakeEngine(), ocr=OCRSettings(mode="huge"))


def test_a_failing_page_does_not_stop_the_document():
    def reply(req, n):
        if n == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return OCRResponse("cut off <|ref|>text<|/ref|><|det|>[[1, 2", "length", 8192) if n == 3 else \
            OCRResponse("", "eos", 1)

    results = list(OCRPipeline(FakeEngine(reply), max_in_flight=2).run(PDF / "multi_page.pdf"))
    assert [r.status for r in results] == ["empty", "error", "empty", "truncated", "empty"]
    assert "out of memory" in results[1].error and results[1].page == 1 and results[1].total_pages == 5
    assert results[3].markdown == "cut off"


def test_async_run_keeps_order():
    pipe = OCRPipeline(FakeEngine(seed=3), max_in_flight=4)

    async def collect():
        return [r.page async for r in pipe.arun([PDF / "multi_page.pdf", PDF / "c02-22.pdf"], pages=[0])]

    assert asyncio.run(collect()) == [0, 0]


def test_source_errors_raise_or_become_pages(tmp_path):
    pipe = OCRPipeline(FakeEngine())
    with pytest.raises(PasswordError):
        list(pipe.run(PDF / "2206.01062_pg3_password_1234.pdf"))
    with pytest.raises(PageRangeError):
        list(pipe.run(PDF / "c02-22.pdf", pages="2"))
    lenient = OCRPipeline(FakeEngine(), on_error="page")
    results = list(lenient.run([PDF / "2206.01062_pg3_password_1234.pdf", PDF / "c02-22.pdf"]))
    assert [r.status for r in results] == ["error", "ok"] and "PasswordError" in results[0].error


def test_boxes_in_pdf_points_under_rotate_and_cropbox(tmp_path):
    """A black square drawn at a known place; find it in the render, let the 'model' report that box,
    and map the result back into PyMuPDF's (unrotated) page space: it lands on the drawing."""
    doc = pymupdf.open()
    page = doc.new_page(width=600, height=800)
    page.draw_rect(pymupdf.Rect(100, 150, 200, 300), color=(0, 0, 0), fill=(0, 0, 0))
    page.set_cropbox(pymupdf.Rect(50, 60, 550, 760))
    page.set_rotation(90)
    doc.save(tmp_path / "rot.pdf")

    def reply(req, n):
        import numpy as np

        a = np.asarray(req.image)[..., 0]
        ys, xs = np.nonzero(a < 128)
        W, H = req.image.size
        box = [round(xs.min() / W * 999), round(ys.min() / H * 999), round((xs.max() + 1) / W * 999),
               round((ys.max() + 1) / H * 999)]
        return OCRResponse(f"<|ref|>image<|/ref|><|det|>[{box}]<|/det|>", "eos", 3)

    (r,) = OCRPipeline(FakeEngine(reply)).run(tmp_path / "rot.pdf")
    assert (r.width, r.height) == (700.0, 500.0)  # cropbox 500 x 700, turned
    fig = r.figures[0]
    src = pymupdf.open(tmp_path / "rot.pdf")[0]
    back = pymupdf.Rect(fig.bbox) * src.derotation_matrix
    drawn = src.get_drawings()[0]["rect"]  # the square in PyMuPDF's page space (cropbox origin)
    assert (back.x0, back.y0, back.x1, back.y1) == pytest.approx((drawn.x0, drawn.y0, drawn.x1, drawn.y1), abs=1.5)
    assert fig.image is not None and abs(fig.image.width - 2 * 150) <= 3  # 150 pt tall square, turned, at 144 dpi


def test_end_to_end_with_the_tiny_real_model():
    """Real model code (golden checkpoint, real tokenizer object) on a real PDF: the text is noise, the
    plumbing is real: each page's raw text is exactly what the model's own greedy path decodes."""
    from dsocr_model import DeepseekOCR, generate, preprocess_image

    pipe = OCRPipeline(EngineSettings(str(GOLDEN), device="cpu"), ocr=OCRSettings(mode="tiny", max_new_tokens=12, ngram_size=0))
    results = list(pipe.run(PDF / "multi_page.pdf", pages="1,4"))
    assert [r.page for r in results] == [0, 3]
    assert all(r.status == "truncated" and r.finish_reason == "length" and r.text_tokens == 12 for r in results)
    model = DeepseekOCR.from_pretrained(GOLDEN, device="cpu", dtype=torch.float32)
    pages = list(OCRPipeline().iter_pages(PDF / "multi_page.pdf", pages="1,4"))
    for r, p in zip(results, pages):
        views = [preprocess_image(p.image, "tiny")]
        ids = generate(model, model.build_input_ids("<image>\n<|grounding|>Convert the document to markdown.", views),
                             views, 12).token_ids
        assert r.raw_text == model.tokenizer.decode(ids, skip_special_tokens=False)
        assert r.vision_tokens == 73 and r.settings["model"].startswith("dsocr_model:sha256:")


def test_importing_the_package_loads_no_torch():
    code = ("import sys, dsocr_loaders; from dsocr_loaders import OCRPipeline, parse_page, PageResult, Element;"
            "OCRPipeline(); parse_page('x', 1, 1); assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
