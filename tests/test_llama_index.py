"""LlamaIndex reader with the real llama-index-core: SimpleDirectoryReader, IngestionPipeline, pickling."""
from __future__ import annotations

import asyncio
import pickle
import shutil
import subprocess
import sys

from llama_index.core import SimpleDirectoryReader
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import ImageDocument, MetadataMode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import SimpleVectorStore

from conftest import FIXTURES, GOLDEN
from dsocr_loaders import OCRResponse
from dsocr_loaders.llama_index import DeepSeekOCRReader
from test_pipeline import FakeEngine

PDF = FIXTURES / "pdf" / "multi_page.pdf"


def test_page_documents_metadata_exclusions_ids():
    reader = DeepSeekOCRReader(engine=FakeEngine(), pages="2-3")
    docs = reader.load_data(PDF, extra_info={"team": "legal"})
    assert [d.metadata["page_number"] for d in docs] == [2, 3]
    m = docs[0].metadata
    assert (m["file_name"], m["page_label"], m["total_pages"], m["team"]) == ("multi_page.pdf", "2", 5, "legal")
    assert m["file_path"] == str(PDF) and m["ocr_status"] == "ok"
    llm_text = docs[0].get_content(MetadataMode.LLM)
    assert "page_number: 2" in llm_text and "team: legal" in llm_text
    assert "ocr_elements" not in llm_text and "bbox" not in docs[0].get_content(MetadataMode.EMBED)
    assert {"ocr_elements", "ocr_model", "page_width"} <= set(docs[0].excluded_embed_metadata_keys)
    assert [d.id_ for d in docs] == [d.id_ for d in reader.load_data(PDF)]


def test_simple_directory_reader_and_ingestion_dedupe(tmp_path):
    shutil.copy(PDF, tmp_path / "a.pdf")
    shutil.copy(FIXTURES / "images" / "double-column-A.jpg", tmp_path / "b.jpg")
    reader = DeepSeekOCRReader(engine=FakeEngine(), pages=[0])
    sdr = SimpleDirectoryReader(tmp_path, file_extractor={".pdf": reader, ".jpg": reader})
    docs = sdr.load_data()
    assert [d.metadata["file_name"] for d in docs] == ["a.pdf", "b.jpg"]
    assert docs[0].metadata["file_size"] > 0  # SimpleDirectoryReader's own metadata merged in
    store, vectors = SimpleDocumentStore(), SimpleVectorStore()
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0),
                                                  MockEmbedding(embed_dim=8)],
                                 docstore=store, vector_store=vectors, docstore_strategy=DocstoreStrategy.UPSERTS)
    nodes = pipeline.run(documents=docs)
    assert len(nodes) > 2 and all(n.embedding is not None for n in nodes)
    held = len(vectors.data.embedding_dict)
    again = pipeline.run(documents=SimpleDirectoryReader(tmp_path, file_extractor={".pdf": reader, ".jpg": reader}).load_data())
    assert again == [] and len(vectors.data.embedding_dict) == held  # same ids, same content: nothing re-embedded
    changed = DeepSeekOCRReader(engine=FakeEngine(lambda r, n: OCRResponse(f"edited {n}", "eos", 3)), pages=[0])
    redone = pipeline.run(documents=SimpleDirectoryReader(tmp_path, file_extractor={".pdf": changed, ".jpg": changed}).load_data())
    assert len(redone) == 2  # new content under the same ids: re-embedded, and replacing the old nodes
    assert sorted(store.get_all_document_hashes().values()) == sorted(d.id_ for d in docs)
    assert {n.ref_doc_id for n in redone} == {d.id_ for d in docs}
    assert len(vectors.data.embedding_dict) == len(redone)


def test_async_elements_and_figures():
    text = ("<|ref|>image<|/ref|><|det|>[[100, 100, 600, 500]]<|/det|>\n\n"
            "<|ref|>title<|/ref|><|det|>[[10, 20, 300, 60]]<|/det|>\n# Heading")
    reader = DeepSeekOCRReader(engine=FakeEngine(lambda r, n: OCRResponse(text, "eos", 9)), pages=[0, 1],
                               split="elements", extract_figures=True)
    docs = asyncio.run(reader.aload_data(PDF))
    texts = [d for d in docs if not isinstance(d, ImageDocument)]
    figures = [d for d in docs if isinstance(d, ImageDocument)]
    assert [(d.metadata["page_number"], d.metadata["category"]) for d in texts] == [
        (1, "image"), (1, "title"), (2, "image"), (2, "title")]
    assert texts[1].text == "# Heading" and texts[1].metadata["bbox_norm"] == "[10, 20, 300, 60]"
    assert len(figures) == 2 and figures[0].image_mimetype == "image/png" and figures[0].image
    assert "bbox" in figures[0].excluded_llm_metadata_keys


def test_errors_become_documents_and_single_split():
    def reply(req, n):
        if n == 1:
            raise RuntimeError("boom")
        return OCRResponse("body", "eos", 2)

    docs = DeepSeekOCRReader(engine=FakeEngine(reply)).load_data(PDF)
    assert [d.metadata["ocr_status"] for d in docs] == ["ok", "error", "ok", "ok", "ok"]
    (single,) = DeepSeekOCRReader(engine=FakeEngine(reply), split="single").load_data(PDF)
    assert single.metadata["ocr_status"] == "partial" and single.text.count("body") == 4


def test_pickles_without_the_model_and_runs_end_to_end():
    reader = DeepSeekOCRReader(model=str(GOLDEN), device="cpu", mode="tiny", max_new_tokens=6, pages=[0])
    docs = reader.load_data(PDF)  # loads the real tiny model through the default local engine
    assert docs[0].metadata["ocr_status"] == "truncated" and docs[0].metadata["ocr_text_tokens"] == 6
    blob = pickle.dumps(reader)
    assert len(blob) < 20_000  # no weights inside
    clone = pickle.loads(blob)
    assert clone._pipeline is None and clone.mode == "tiny"
    assert clone.load_data(PDF)[0].text == docs[0].text


def test_each_adapter_imports_without_the_other_framework_or_torch():
    for module, blocked in (("dsocr_loaders.langchain", "llama_index"), ("dsocr_loaders.llama_index", "langchain_core")):
        code = (f"import sys; sys.modules[{blocked!r}] = None; import {module}; "
                "assert 'torch' not in sys.modules")
        subprocess.run([sys.executable, "-c", code], check=True)


def test_simple_directory_reader_with_worker_processes(tmp_path):
    """num_workers > 1 pickles the reader into spawned processes; each loads the model lazily."""
    for name in ("a", "b"):
        shutil.copy(FIXTURES / "pdf" / "c02-22.pdf", tmp_path / f"{name}.pdf")
    reader = DeepSeekOCRReader(model=str(GOLDEN), device="cpu", mode="tiny", max_new_tokens=3)
    docs = SimpleDirectoryReader(tmp_path, file_extractor={".pdf": reader}).load_data(num_workers=2)
    assert sorted(d.metadata["file_name"] for d in docs) == ["a.pdf", "b.pdf"]
    assert {d.metadata["ocr_status"] for d in docs} == {"truncated"} and docs[0].id_ == docs[1].id_
