"""Batch-proof ingestion: one bad file, one dead engine or one more loader never costs a user pages.

The acceptance folder: a 5-page PDF, an encrypted PDF, a zero-byte .pdf, a .txt renamed .pdf, a headerless
PDF (PyMuPDF reads it) and a PNG. Every surface returns every readable page plus one error result per
unreadable file with on_error="page", leaves them out with "skip", and raises a typed error naming the file
for one bad file by default; an engine that cannot work raises EngineUnavailableError, never empty pages.
"""
from __future__ import annotations

import json
import logging
import shutil

import pymupdf
import pytest

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import EngineSettings, EngineUnavailableError, OCRPipeline, OCRSettings, PasswordError
from test_pipeline import FakeEngine

PDF = FIXTURES / "pdf" / "multi_page.pdf"
READABLE = {"a_report.pdf": 5, "e_headerless.pdf": 5, "f_scan.png": 1}
UNREADABLE = {"b_locked.pdf": "PasswordError", "c_empty.pdf": "EmptyInputError", "d_notes.pdf": "UnsupportedFormatError"}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(PDF, d / "a_report.pdf")
    doc = pymupdf.open(PDF)
    doc.save(d / "b_locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="s3cret", owner_pw="owner")
    (d / "c_empty.pdf").write_bytes(b"")
    (d / "d_notes.pdf").write_text("just some notes, not a PDF\n" * 20)
    raw = PDF.read_bytes()
    (d / "e_headerless.pdf").write_bytes(raw[raw.index(b"\n") + 1:])  # the %PDF-1.x line lost
    shutil.copy(FIXTURES / "images" / "2305.03393v1-pg9-img.png", d / "f_scan.png")
    return d


def _by_file(items, source_of, status_of):
    out: dict[str, list[str]] = {}
    for it in items:
        out.setdefault(source_of(it).rsplit("/", 1)[-1], []).append(status_of(it))
    return out


def test_pipeline_over_the_folder_reports_each_unreadable_file_once(folder, caplog):
    results = list(OCRPipeline(FakeEngine()).run(folder))  # a folder: on_error defaults to "page"
    got = _by_file(results, lambda r: r.source, lambda r: r.status)
    assert {f: len(v) for f, v in got.items() if f in READABLE} == READABLE
    assert all(s == "ok" for f, v in got.items() if f in READABLE for s in v)
    errors = {r.source.rsplit("/", 1)[-1]: r for r in results if r.status == "error"}
    assert {f: r.error_type for f, r in errors.items()} == UNREADABLE
    assert all(r.width is None and r.vision_tokens is None and r.is_file_error for r in errors.values())
    assert all(sum(f in m for m in caplog.messages) == 1 for f in UNREADABLE)  # logged once each
    headerless = next(r for r in results if r.source.endswith("e_headerless.pdf"))
    assert headerless.doc_metadata.get("pdf_repaired") is True
    skipped = list(OCRPipeline(FakeEngine(), on_error="skip").run(folder))
    assert len(skipped) == sum(READABLE.values()) and all(r.status == "ok" for r in skipped)


def test_langchain_loader_over_the_folder(folder, caplog):
    from dsocr_loaders.langchain import DeepSeekOCRLoader

    docs = DeepSeekOCRLoader(folder, engine=FakeEngine(), on_error="page").load()
    got = _by_file(docs, lambda d: d.metadata["source"], lambda d: d.metadata["ocr_status"])
    assert {f: v for f, v in got.items() if f in UNREADABLE} == {f: ["error"] for f in UNREADABLE}
    assert {f: len(v) for f, v in got.items() if f in READABLE} == READABLE
    bad = {d.metadata["source"].rsplit("/", 1)[-1]: d for d in docs if d.metadata["ocr_status"] == "error"}
    assert all("page" not in d.metadata and d.metadata["ocr_error_type"] == UNREADABLE[f] for f, d in bad.items())
    assert len({d.id for d in docs}) == len(docs)
    quiet = DeepSeekOCRLoader(folder, engine=FakeEngine(), on_error="skip").load()
    assert len(quiet) == sum(READABLE.values())
    default = DeepSeekOCRLoader([folder / "a_report.pdf", folder / "c_empty.pdf"], engine=FakeEngine()).load()
    assert len(default) == 6  # a list: the default reports the bad file and goes on
    with pytest.raises(PasswordError, match="b_locked.pdf"):  # one bad file, default: a typed error naming it
        DeepSeekOCRLoader(folder / "b_locked.pdf", engine=FakeEngine()).load()


def test_llama_index_reader_over_the_folder(folder):
    from dsocr_loaders.llama_index import DeepSeekOCRReader

    docs = DeepSeekOCRReader(engine=FakeEngine(), on_error="page").load_data(folder)
    got = _by_file(docs, lambda d: d.metadata["file_path"], lambda d: d.metadata["ocr_status"])
    assert {f: v for f, v in got.items() if f in UNREADABLE} == {f: ["error"] for f in UNREADABLE}
    assert {f: len(v) for f, v in got.items() if f in READABLE} == READABLE
    assert len(DeepSeekOCRReader(engine=FakeEngine(), on_error="skip").load_data(folder)) == sum(READABLE.values())
    with pytest.raises(PasswordError, match="b_locked.pdf"):
        DeepSeekOCRReader(engine=FakeEngine()).load_data(folder / "b_locked.pdf")


def test_cli_over_the_folder_and_its_exit_codes(folder, tmp_path, capsys):
    from dsocr_loaders.apps.cli import main

    tiny = ["--model", str(GOLDEN), "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "2", "--no-cache", "-q"]
    out = tmp_path / "out"
    assert main(["convert", str(folder), "-o", str(out), "--pages", "1-2", *tiny]) == 1  # some files failed
    for name, n in READABLE.items():
        pages = json.loads((out / f"{name.rsplit('.', 1)[0]}.json").read_text())["pages"]
        assert len(pages) == min(n, 2) and all(p["status"] != "error" for p in pages)  # --pages per document
    for name, kind in UNREADABLE.items():
        stem = name.rsplit(".", 1)[0]
        (page,) = json.loads((out / f"{stem}.json").read_text())["pages"]
        assert page["error_type"] == kind and not (out / f"{stem}.md").exists()  # no empty .md
    assert "--password" in json.loads((out / "b_locked.json").read_text())["pages"][0]["error"]
    assert main(["convert", str(folder / "a_report.pdf"), "-o", str(out), *tiny]) == 0  # every page fine
    (tmp_path / "none").mkdir()
    assert main(["convert", str(tmp_path / "none"), "-o", str(out), *tiny]) == 2  # no inputs
    capsys.readouterr()
    missing = ["--model", str(tmp_path / "no-model"), "--device", "cpu", "--no-cache", "-q"]
    assert main(["convert", str(folder / "f_scan.png"), "-o", str(out), *missing]) == 3  # engine unusable
    assert capsys.readouterr().err.count("engine is unusable") == 1  # said once, not once per page


def test_an_unusable_engine_raises_a_typed_error_never_empty_documents(folder, tmp_path, caplog):
    from dsocr_loaders.langchain import DeepSeekOCRLoader
    from dsocr_loaders.llama_index import DeepSeekOCRReader

    with pytest.raises(EngineUnavailableError, match="no-model"):
        DeepSeekOCRLoader(folder / "a_report.pdf", model=str(tmp_path / "no-model"), device="cpu").load()
    with pytest.raises(EngineUnavailableError, match="gave up"):  # nothing listens on port 9
        DeepSeekOCRReader(engine="openai", base_url="http://127.0.0.1:9/v1",
                          engine_options={"retries": 1, "backoff": 0.01}).load_data(folder / "f_scan.png")
    with caplog.at_level(logging.WARNING), pytest.raises(EngineUnavailableError):
        list(OCRPipeline(EngineSettings(str(tmp_path / "no-model"), device="cpu")).run(folder / "a_report.pdf"))


def test_aes256_passwords_are_tried_saslprep_normalised(tmp_path):
    from dsocr_loaders.ocr.formats import open_document, saslprep

    pymupdf.open(PDF).save(tmp_path / "s.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="IX", owner_pw="o")
    assert not pymupdf.open(tmp_path / "s.pdf").authenticate("I\u00adX")  # MuPDF alone refuses the raw form
    assert saslprep("I\u00adX") == saslprep("\u2168") == "IX"  # soft hyphen dropped; roman numeral NFKC'd
    assert open_document("s.pdf", str(tmp_path / "s.pdf"), password="I\u00adX").total_pages == 5
    with pytest.raises(PasswordError, match="wrong password"):
        open_document("s.pdf", str(tmp_path / "s.pdf"), password="XI")


def test_a_loader_per_file_in_a_loop_shares_one_model(tmp_path):
    """Eight loaders in a loop: one loaded model, threads and RSS flat after the first (measured in a child)."""
    code = f"""
import json, os, threading
from dsocr_loaders.langchain import DeepSeekOCRLoader
from dsocr_loaders.ocr.engines import shared
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
out = []
for i in range(8):
    DeepSeekOCRLoader({str(PDF)!r}, model={str(GOLDEN)!r}, device="cpu", mode="tiny", max_new_tokens=2, pages="1").load()
    out.append([rss(), threading.active_count(), shared.loaded()])
with DeepSeekOCRLoader({str(PDF)!r}, model={str(GOLDEN)!r}, device="cpu", mode="tiny", max_new_tokens=2,
                       pages="1", max_crops=5) as own:  # other settings, same weights: the same model
    own.load()
    out.append([rss(), threading.active_count(), shared.loaded()])
print(json.dumps(out))
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    print("RSS MB, threads, models per loop step:", steps)
    assert all(models == 1 for _, _, models in steps)
    assert len({threads for _, threads, _ in steps[1:]}) == 1  # no thread per loader
    assert steps[7][0] - steps[1][0] < 40  # MB: nothing grows per loader


def test_a_kill_loses_no_page_that_finished_behind_a_slow_one(tmp_path):
    """Pages 2-5 finish while page 1 is still running; the process is killed before page 1 is yielded:
    the cache already holds pages 2-5 (they were written as they finished, not in yield order)."""
    import sqlite3
    import subprocess
    import sys
    import time

    db = tmp_path / "c.sqlite"
    code = f"""
import itertools, threading
from concurrent.futures import Future
from dsocr_loaders import OCRPipeline, OCRResponse
calls = itertools.count()
class SlowFirstPage:
    identity = "fake:slow-first"
    def submit(self, request):
        f, slow = Future(), next(calls) == 0
        threading.Timer(60 if slow else 0.05, f.set_result, [OCRResponse("text", "eos", 3)]).start()
        return f
for r in OCRPipeline(SlowFirstPage(), cache={str(db)!r}, max_in_flight=5).run({str(PDF)!r}):
    print("yielded", r.page, flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    rows, deadline = 0, time.time() + 60
    while rows < 4 and time.time() < deadline and child.poll() is None:
        time.sleep(0.2)
        try:
            rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.Error:
            rows = 0
    child.kill()
    out, _ = child.communicate()
    assert "yielded" not in out  # killed while page 1 was still running
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4


def test_blob_errors_name_the_file_and_engines_close(folder):
    from langchain_core.document_loaders import Blob

    from dsocr_loaders import LocalEngine
    from dsocr_loaders.langchain import DeepSeekOCRParser
    from dsocr_loaders.ocr.engines import shared

    with pytest.raises(PasswordError, match="b_locked.pdf"):  # GenericLoader hands bytes: still the file's name
        list(DeepSeekOCRParser(engine=FakeEngine()).lazy_parse(Blob.from_path(folder / "b_locked.pdf")))
    (doc,) = DeepSeekOCRParser(engine=FakeEngine(), on_error="page").lazy_parse(Blob.from_path(folder / "c_empty.pdf"))
    assert doc.metadata["source"].endswith("c_empty.pdf") and doc.metadata["ocr_error_type"] == "EmptyInputError"
    before = shared.loaded()
    tiny = OCRSettings(mode="tiny", max_new_tokens=3)
    with LocalEngine(str(GOLDEN), device="cpu") as engine, OCRPipeline(engine, ocr=tiny) as pipe:
        assert list(pipe.run(folder / "f_scan.png"))[0].text_tokens
        assert shared.loaded() == before + 1
    assert shared.loaded() == before  # the last user gave the model back
