"""LangChain adapters with the real langchain-core: fake engine answering real DeepSeek-OCR text, then the
real tiny model end to end."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from langchain_core.document_loaders import Blob
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.indexing import InMemoryRecordManager, index
from langchain_core.vectorstores import InMemoryVectorStore

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import OCRResponse
from dsocr_loaders.langchain import DeepSeekOCRLoader, DeepSeekOCRParser
from test_pipeline import FakeEngine

PDF = FIXTURES / "pdf" / "multi_page.pdf"


def test_page_documents_metadata_and_ids():
    docs = DeepSeekOCRLoader(PDF, engine=FakeEngine(), pages="1-3").load()
    assert [d.metadata["page"] for d in docs] == [0, 1, 2]
    m = docs[1].metadata
    assert m["source"] == m["file_path"] == str(PDF) and m["page_label"] == "2" and m["total_pages"] == 5
    assert m["creationdate"] == "2025-01-24T13:59:15+00:00" and "Quartz" in m["producer"]
    assert (m["ocr_status"], m["ocr_model"], m["ocr_mode"], m["ocr_task"]) == ("ok", "fake:example", "gundam", "markdown")
    assert m["ocr_vision_tokens"] == 903 and m["ocr_text_tokens"] == 321
    assert (m["page_width"], m["page_height"], m["page_unit"]) == (595.2, 841.92, "pt")
    boxes = json.loads(m["ocr_elements"])
    assert boxes[0]["label"] == "sub_title" and boxes[0]["bbox_norm"] == [217, 209, 520, 225]
    json.dumps([d.metadata for d in docs])  # flat and JSON-serializable
    assert all(not isinstance(v, (dict, list)) for v in m.values())
    assert docs[1].page_content.startswith("order to compute") and "### 5.1" in docs[1].page_content
    again = DeepSeekOCRLoader(PDF, engine=FakeEngine(), pages="1-3").load()
    assert [d.id for d in docs] == [d.id for d in again] and len({d.id for d in docs}) == 3
    other_mode = DeepSeekOCRLoader(PDF, engine=FakeEngine(), pages="1-3", mode="base").load()
    assert not {d.id for d in docs} & {d.id for d in other_mode}


def test_single_and_elements_splits():
    (single,) = DeepSeekOCRLoader(PDF, engine=FakeEngine(), split="single", pages_delimiter="\n\f").load()
    assert single.page_content.count("\n\f") == 4 and "page" not in single.metadata
    assert single.metadata["ocr_status"] == "ok" and single.metadata["total_pages"] == 5
    elements = DeepSeekOCRLoader(PDF, engine=FakeEngine(), split="elements", pages=[0]).load()
    assert [d.metadata["category"] for d in elements][:4] == ["text", "sub_title", "text", "table"]
    sub = elements[1]
    assert sub.page_content == "### 5.1 Hyper Parameter Optimization"
    assert json.loads(sub.metadata["bbox_norm"]) == [217, 209, 520, 225]
    x0, y0, x1, y1 = json.loads(sub.metadata["bbox"])
    assert 0 < x0 < x1 <= 595.2 and 0 < y0 < y1 <= 841.92
    assert len({d.id for d in elements}) == len(elements)
    nested = DeepSeekOCRLoader(PDF, engine=FakeEngine(), split="elements", pages=[0], nested_metadata=True).load()
    assert nested[1].metadata["bbox_norm"] == [217, 209, 520, 225]


def test_errors_are_per_page_documents_not_drops():
    def reply(req, n):
        if n == 2:
            raise RuntimeError("engine fell over")
        return OCRResponse("text " * 5, "length", 8192) if n == 4 else OCRResponse("hello", "eos", 2)

    docs = DeepSeekOCRLoader(PDF, engine=FakeEngine(reply)).load()
    assert [d.metadata["ocr_status"] for d in docs] == ["ok", "ok", "error", "ok", "truncated"]
    assert "engine fell over" in docs[2].metadata["ocr_error"] and docs[2].page_content == ""
    (single,) = DeepSeekOCRLoader(PDF, engine=FakeEngine(reply), split="single").load()
    assert single.metadata["ocr_status"] == "partial" and json.loads(single.metadata["ocr_pages_not_ok"]) == [2, 4]


def test_async_load_in_order():
    loader = DeepSeekOCRLoader([PDF, FIXTURES / "pdf" / "c02-22.pdf"], engine=FakeEngine(seed=7), pages=[0])

    async def run():
        return [d async for d in loader.alazy_load()]

    docs = asyncio.run(run())
    assert [(d.metadata["source"].rsplit("/", 1)[-1], d.metadata["page"]) for d in docs] == [
        ("multi_page.pdf", 0), ("c02-22.pdf", 0)]
    assert [d.id for d in docs] == [d.id for d in loader.load()]


def test_blob_parser_and_directory_loading(tmp_path):
    parser = DeepSeekOCRParser(engine=FakeEngine(), pages=[0])
    from_path = list(parser.lazy_parse(Blob.from_path(PDF)))
    from_data = list(parser.lazy_parse(Blob.from_data(PDF.read_bytes(), path=str(PDF))))
    assert from_path[0].metadata["source"] == str(PDF) and from_path[0].id == from_data[0].id
    image = list(parser.lazy_parse(Blob.from_path(FIXTURES / "images" / "double-column-A.jpg")))
    assert image[0].metadata["page_unit"] == "px" and image[0].metadata["page_width"] == 1248
    shutil.copy(PDF, tmp_path / "a.pdf")
    shutil.copy(FIXTURES / "images" / "Portrait_6.jpg", tmp_path / "b.jpg")
    docs = DeepSeekOCRLoader(tmp_path, engine=FakeEngine(), pages=[0]).load()
    assert [d.metadata["source"].rsplit("/", 1)[-1] for d in docs] == ["a.pdf", "b.jpg"]


def test_index_dedupes_by_id():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    records = InMemoryRecordManager("dsocr")
    records.create_schema()
    first = index(DeepSeekOCRLoader(PDF, engine=FakeEngine()), records, store, cleanup="incremental",
                  source_id_key="source")
    second = index(DeepSeekOCRLoader(PDF, engine=FakeEngine()), records, store, cleanup="incremental",
                   source_id_key="source")
    assert first["num_added"] == 5 and second["num_added"] == 0 and second["num_skipped"] == 5


def test_vector_store_upserts_by_our_ids():
    """index() hashes content itself; a plain vector store upserts by Document.id, so this depends on ours:
    the same file loaded twice replaces its pages, a setting that changes the content adds new ones."""
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    for _ in range(2):
        store.add_documents(DeepSeekOCRLoader(PDF, engine=FakeEngine()).load())
    assert len(store.store) == 5
    store.add_documents(DeepSeekOCRLoader(PDF, engine=FakeEngine(), dpi=100).load())  # other pixels, other ids
    assert len(store.store) == 10


def test_figures_saved_and_linked(tmp_path):
    text = "<|ref|>image<|/ref|><|det|>[[100, 100, 600, 500]]<|/det|>\n\n<|ref|>text<|/ref|><|det|>[[0, 0, 9, 9]]<|/det|>\nx"
    (doc,) = DeepSeekOCRLoader(PDF, engine=FakeEngine(lambda r, n: OCRResponse(text, "eos", 9)), pages=[2],
                               figures_dir=tmp_path / "figs").load()
    saved = tmp_path / "figs" / "multi_page_2_0.jpg"
    assert saved.exists() and f"![image]({saved.as_posix()})" in doc.page_content


def test_loader_end_to_end_with_the_tiny_model():
    docs = DeepSeekOCRLoader(PDF, model=str(GOLDEN), device="cpu", mode="tiny", max_new_tokens=8, pages="1-2").load()
    assert [d.metadata["page"] for d in docs] == [0, 1]
    assert all(d.metadata["ocr_status"] == "truncated" and d.metadata["ocr_text_tokens"] == 8 for d in docs)
    model = docs[0].metadata["ocr_model"]
    assert model.startswith("dsocr_model:sha256:") and str(GOLDEN) not in model  # no path leaks into metadata
    assert docs[0].metadata["ocr_vision_tokens"] == 73


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="split"):
        DeepSeekOCRLoader(PDF, engine=FakeEngine(), split="chapters")
    with pytest.raises(ValueError, match="unknown mode"):
        DeepSeekOCRParser(engine=FakeEngine(), mode="giant")
