"""Result cache: a second run does no OCR; other settings miss; a broken cache degrades, never fails a page."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from conftest import FIXTURES
from dsocr_loaders import OCRPipeline, OCRSettings
from dsocr_loaders.ocr.cache import ResultCache
from dsocr_loaders.langchain import DeepSeekOCRLoader
from dsocr_loaders.llama_index import DeepSeekOCRReader
from test_pipeline import FakeEngine

PDF = FIXTURES / "pdf" / "multi_page.pdf"


def test_second_run_is_served_from_the_cache(tmp_path):
    db = tmp_path / "cache.sqlite"
    first_engine, second_engine = FakeEngine(), FakeEngine()
    first = list(OCRPipeline(first_engine, cache=db).run(PDF))
    second = list(OCRPipeline(second_engine, cache=db).run(PDF))
    assert first_engine.calls == 5 and second_engine.calls == 0
    assert [r.markdown for r in first] == [r.markdown for r in second]
    assert [r.status for r in second] == ["ok"] * 5 and all(r.timings.get("cache_hit") for r in second)
    assert second[0].text_tokens == 321 and second[0].elements[1].bbox == first[0].elements[1].bbox
    other = FakeEngine()
    list(OCRPipeline(other, ocr=OCRSettings(mode="base"), cache=db).run(PDF, pages=[0]))
    assert other.calls == 1  # another mode is another key


def test_adapters_pass_the_cache_through(tmp_path):
    db = tmp_path / "c.sqlite"
    DeepSeekOCRLoader(PDF, engine=FakeEngine(), pages=[0], cache=db).load()
    engine = FakeEngine()
    docs = DeepSeekOCRReader(engine=engine, pages=[0], cache=str(db)).load_data(PDF)
    assert engine.calls == 0 and docs[0].metadata["ocr_status"] == "ok"


def test_corrupt_or_unwritable_cache_degrades_to_no_cache(tmp_path, caplog):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    engine = FakeEngine()
    results = list(OCRPipeline(engine, cache=bad).run(PDF, pages=[0, 1]))
    assert [r.status for r in results] == ["ok", "ok"] and engine.calls == 2
    assert "disabled" in caplog.text
    blocked = tmp_path / "file"
    blocked.write_text("x")
    cache = ResultCache(blocked / "sub" / "c.sqlite")  # parent is a file: cannot create
    assert not cache.enabled


def test_a_locked_cache_degrades_to_no_cache(tmp_path, caplog):
    """Another process holds an exclusive lock past the busy timeout: pages still come back, from the engine."""
    db = tmp_path / "locked.sqlite"
    ResultCache(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # in WAL mode this blocks writers (and, exclusive, readers too)
    try:
        engine = FakeEngine()
        results = list(OCRPipeline(engine, cache=ResultCache(db, timeout=0.2)).run(PDF, pages=[0, 1, 2]))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r.status for r in results] == ["ok"] * 3 and engine.calls == 3
    assert "disabled" in caplog.text and "locked" in caplog.text


def test_a_finished_page_survives_a_killed_process(tmp_path):
    """Pages are committed one by one: a process killed after two pages leaves those two in the cache."""
    db = tmp_path / "k.sqlite"
    code = f"""
import os, sys
sys.path.insert(0, {str(FIXTURES.parents[1])!r})
from test_pipeline import FakeEngine
from dsocr_loaders import OCRPipeline
for r in OCRPipeline(FakeEngine(), cache={str(db)!r}, max_in_flight=1).run({str(PDF)!r}):
    if r.page == 1:
        os._exit(9)   # no cleanup, like kill -9
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert rows >= 2
    engine = FakeEngine()
    list(OCRPipeline(engine, cache=db).run(PDF))
    assert engine.calls == 5 - rows


WRITER = """
import sys, logging
from dsocr_loaders.ocr.cache import ResultCache
from dsocr_loaders.ocr.types import OCRResponse
logging.basicConfig(level=logging.WARNING)
cache, me = ResultCache(sys.argv[1]), int(sys.argv[2])
for i in range(200):
    cache.put(f"k{me}-{i}", OCRResponse(f"page {me}-{i}", "eos", i))
    cache.put(f"shared-{i % 20}", OCRResponse(f"shared {i % 20}", "eos", 1))  # the same keys from everyone
    assert cache.get(f"k{me}-{i}").text == f"page {me}-{i}"
assert cache.enabled, "cache turned itself off"
"""


def test_several_processes_share_one_cache(tmp_path):
    """Four processes writing at once: every row lands, none sees a locked or corrupt file (WAL + busy timeout)."""
    db = tmp_path / "shared.sqlite"
    ResultCache(db)  # create the table first, as the first CLI run would
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(k)], stderr=subprocess.PIPE, text=True)
             for k in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert not any("disabled" in e for e in errors), errors
    cache = ResultCache(db)
    assert all(cache.get(f"k{k}-{i}").text_tokens == i for k in range(4) for i in range(200))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4 * 200 + 20


def test_model_identity_follows_the_weights_and_the_hub_revision(tmp_path):
    """The cache key's model part: the weights' content (not their path), a hub id's resolved commit."""
    import shutil

    from conftest import GOLDEN
    from dsocr_loaders.ocr.engines import LocalEngine, checkpoint_identity

    copy = tmp_path / "ckpt"
    shutil.copytree(GOLDEN, copy)
    before = checkpoint_identity(str(copy))
    assert before == checkpoint_identity(str(GOLDEN)) and str(tmp_path) not in before  # same weights elsewhere
    with open(copy / "config.json", "a") as f:
        f.write("\n")
    assert checkpoint_identity(str(copy)) != before
    snap = tmp_path / "hub" / "models--org--ocr" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--ocr" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--ocr" / "refs" / "main").write_text("a" * 40)
    code = ("from dsocr_loaders.ocr.engines import LocalEngine; from dsocr_loaders import EngineUnavailableError\n"
            "print(LocalEngine('org/ocr').identity)\n"
            "try: LocalEngine('org/new').identity\nexcept EngineUnavailableError as e: print('unavailable')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert out.stdout.split() == [f"dsocr_model:org/ocr@{'a' * 40}", "unavailable"]  # never "org/new@main"
    assert LocalEngine(str(copy)).identity == "dsocr_model:" + checkpoint_identity(str(copy))
