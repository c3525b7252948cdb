"""Quality signals: repetition on synthetic loops, text-layer agreement on a real born-digital page and its real
DeepSeek-OCR output, log-probabilities and guard hits from the engine equal to the one-sequence path's, the
verdict, retry and drop."""
from __future__ import annotations

import logging

import pytest
import torch

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import OCRPipeline, OCRResponse, OCRSettings
from dsocr_loaders.ocr.grounding import parse_page
from dsocr_loaders.ocr.quality import Thresholds, assess, repetition_score, text_layer_agreement
from test_pipeline import FakeEngine

RAW = FIXTURES / "deepseek_raw" / "docling_md_deepseek" / "sources"
OTSL_PDF = FIXTURES / "pdf" / "2305.03393v1-pg9.pdf"  # deepseek_example.md is the model's output for this page


def _markdown(name: str) -> str:
    return parse_page((RAW / name).read_text(encoding="utf-8"), 612, 792).markdown


def _layer(pdf=OTSL_PDF) -> str:
    import pymupdf

    with pymupdf.open(pdf) as doc:
        return doc[0].get_text()


def test_repetition_score_sees_loops_and_not_ordinary_text():
    page = _markdown("deepseek_example.md")
    assert repetition_score(page) == 0.0  # real output with tables and repeated words: no loop
    looped = page[:400] + " " + "the model repeats this line again, " * 60
    assert repetition_score(looped) > 0.8
    tail_loop = page + "\n" + "| 0 | 0 |\n" * 20  # a loop of 2-word rows after a good page
    assert 0.0 < repetition_score(tail_loop) < 0.3
    assert repetition_score("very very good. " * 2) == 0.0 and repetition_score("") == 0.0


def test_text_layer_agreement_on_a_real_page():
    layer = _layer()
    recall, precision = text_layer_agreement(_markdown("deepseek_example.md"), layer)
    assert recall > 0.95 and precision > 0.95  # the model's real transcription of this very page
    wrong_page = text_layer_agreement(_markdown("deepseek_title.md"), layer)  # another page's (real) output
    assert max(wrong_page) < 0.3
    hallucinated = "Quarterly revenue grew in every region while operating costs fell sharply. " * 5
    assert max(text_layer_agreement(hallucinated, layer)) < 0.1
    partial = text_layer_agreement(_markdown("deepseek_simple.md"), layer)  # a part of the page only
    assert partial[0] < 0.7 and partial[1] > 0.95
    assert text_layer_agreement("anything", "12") is None and text_layer_agreement("anything", None) is None


def test_verdicts():
    layer = _layer()
    good = assess(_markdown("deepseek_example.md"), "ok", {"mean_logprob": -0.2, "min_logprob": -5.0, "guard_hits": 0},
                  layer)
    assert good.verdict == "good" and good.reasons == ()
    looped = assess(_markdown("deepseek_example.md") + " again and again" * 200, "truncated", {}, layer)
    assert looped.verdict == "bad" and any("repetition" in r for r in looped.reasons)
    wrong = assess(_markdown("deepseek_title.md"), "ok", {}, layer)
    assert wrong.verdict == "bad" and "text-layer recall" in wrong.reasons[0]
    unsure = assess("A short clean page.", "ok", {"mean_logprob": -2.3, "min_logprob": -9.0, "guard_hits": 4})
    assert unsure.verdict == "suspect" and len(unsure.reasons) == 2
    assert assess("A short clean page.", "ok", {"mean_logprob": -2.3}, thresholds=Thresholds(suspect_mean_logprob=-3)).verdict == "good"
    assert assess("", "empty").verdict == "bad"


def test_engine_log_probabilities_equal_the_one_sequence_path(golden_model, tmp_path):
    """End to end on the tiny model: the page's mean and minimum equal log-softmax of the one-sequence path's
    logits at the chosen ids, and its guard hits equal that path's (a blank page, on which the tiny model
    repeats itself, so the guard steps in)."""
    from PIL import Image

    from dsocr_loaders import LocalEngine
    from dsocr_model import generate, preprocess_image

    Image.new("RGB", (300, 200), "white").save(tmp_path / "blank.png")
    settings = OCRSettings(task="free_ocr", mode="tiny", max_new_tokens=30, ngram_size=2, window_size=10)
    with LocalEngine(str(GOLDEN), device="cpu") as engine:
        pipe = OCRPipeline(engine, ocr=settings)
        (page,) = pipe.iter_pages(tmp_path / "blank.png")
        (result,) = pipe.run_pages([page])
    views = [preprocess_image(page.image, "tiny", spec=golden_model.spec)]
    ids = golden_model.build_input_ids(golden_model.spec.prompt("free_ocr"), views)
    ref = generate(golden_model, ids, views, 30, ngram_size=2, window_size=10,
                   whitelist=golden_model.spec.whitelist_ids, keep_logits=True)
    chosen = torch.tensor(ref.token_ids)
    logprobs = torch.stack(ref.step_logits).log_softmax(-1).gather(1, chosen[:, None])[:, 0]
    q = result.quality
    assert q.mean_logprob == pytest.approx(float(logprobs.mean()), abs=1e-4)
    assert q.min_logprob == pytest.approx(float(logprobs.min()), abs=1e-4)
    assert q.guard_hits == ref.guard_hits > 0  # the guard changed the greedy choice: its bans are in play
    assert q.repetition is not None and q.verdict in ("good", "suspect", "bad")
    assert result.to_dict()["quality"]["mean_logprob"] == q.mean_logprob


def test_retry_keeps_the_better_answer_and_uses_a_stricter_guard():
    clean = (RAW / "deepseek_example.md").read_text(encoding="utf-8")
    requests = []

    def reply(request, n):
        requests.append(request)
        looped = clean[:300] + " the same words again," * 80
        return OCRResponse(looped if n == 0 else clean, "length" if n == 0 else "eos", 99,
                           signals={"mean_logprob": -0.3, "min_logprob": -4.0, "guard_hits": 0})

    pipe = OCRPipeline(FakeEngine(reply), on_suspect="retry")
    (result,) = pipe.run(OTSL_PDF)
    assert result.quality.verdict == "good" and result.timings["retried"] == 1.0
    assert result.markdown.startswith("order to compute the TED score")
    first, second = requests
    assert (second.ngram_size, second.window_size) == (first.ngram_size // 2, 128)  # v1: 20/50 -> 10/128


def test_drop_leaves_suspect_pages_out_of_the_documents_with_a_warning(caplog):
    from dsocr_loaders.langchain import DeepSeekOCRLoader

    looped = "text again " * 100
    images = [str(FIXTURES / "images" / n) for n in ("Portrait_6.jpg", "double-column-A.jpg", "2305.03393v1-pg9-img.png")]
    engine = FakeEngine(lambda r, n: OCRResponse(looped if n == 1 else "A clean page of text.", "eos", 9))
    with caplog.at_level(logging.WARNING):
        docs = DeepSeekOCRLoader(images, engine=engine, on_suspect="drop").load()
    assert len(docs) == 2 and "dropped: quality bad (repetition 1.00)" in caplog.text
    kept = DeepSeekOCRLoader(images[0], engine=FakeEngine(lambda r, n: OCRResponse(looped, "eos", 9))).load()
    assert kept[0].metadata["ocr_quality_verdict"] == "bad" and kept[0].metadata["ocr_quality_repetition"] == 1.0


def test_the_cache_keeps_the_signals(tmp_path):
    signals = {"mean_logprob": -0.5, "min_logprob": -3.0, "guard_hits": 2}
    pipe = OCRPipeline(FakeEngine(lambda r, n: OCRResponse("Some text.", "eos", 3, signals=signals)),
                       cache=tmp_path / "c.sqlite")
    (first,) = pipe.run(OTSL_PDF)
    (again,) = pipe.run(OTSL_PDF)
    assert again.timings.get("cache_hit") and again.quality.guard_hits == 2 == first.quality.guard_hits
    assert again.quality.mean_logprob == -0.5
