"""Heading-aware chunks on real DeepSeek-OCR output (docling's raw fixtures): the heading path, no chunk across
a heading, tables whole, pages spanned, every block's box, page headers/footers out of the text, deterministic
ids, and the same through LangChain, LlamaIndex (SOURCE/PREVIOUS/NEXT) and the CLI's JSON."""
from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from dsocr_loaders import OCRResponse
from dsocr_loaders.ocr.chunks import chunk_pages, count_tokens
from dsocr_loaders.ocr.grounding import parse_page
from test_pipeline import FakeEngine

RAW = FIXTURES / "deepseek_raw" / "docling_md_deepseek" / "sources"
TITLE, EXAMPLE = (RAW / "deepseek_title.md").read_text(encoding="utf-8"), (RAW / "deepseek_example.md").read_text(encoding="utf-8")
HEADER = "<|ref|>header<|/ref|><|det|>[[80, 20, 920, 40]]<|/det|>\nRunning head of the preprint\n\n"
FOOTER = "\n\n<|ref|>footer<|/ref|><|det|>[[450, 950, 550, 970]]<|/det|>\nPage 9 of 12"


def _pages(*raws: str) -> list:
    return [parse_page(raw, 612, 792, "pt", page=i) for i, raw in enumerate(raws)]


def test_chunks_follow_headings_and_never_cross_them():
    chunks = chunk_pages(_pages(TITLE, EXAMPLE), chunk_tokens=200)
    title = "DocLayNet: A Large Human-Annotated Dataset for Document-Layout Analysis"
    assert chunks[0].headings == [title] and chunks[0].text.startswith("Birgit Pfitzmann")
    assert chunks[1].headings == [title, "ABSTRACT"] and chunks[1].text.startswith("Accurate document layout")
    sections = [tuple(c.headings) for c in chunks]
    assert sections == sorted(sections, key=sections.index)  # a section's chunks are consecutive
    for c in chunks:  # no heading text inside a chunk body: every heading started a new chunk
        assert "## " not in c.text and [b["label"] for b in c.blocks].count("sub_title") <= 1
    assert [c.index for c in chunks] == list(range(len(chunks)))
    spanning = [c for c in chunks if c.pages == [0, 1]]  # "ACM Reference Format" runs onto the next page
    assert spanning and spanning[0].headings[-1] == "ACM Reference Format:"
    assert chunks[-1].headings[-1] == "5.2 Quantitative Results"


def test_budget_is_kept_except_for_whole_tables():
    chunks = chunk_pages(_pages(TITLE, EXAMPLE), chunk_tokens=120)
    tables = [c for c in chunks if "<table" in c.text]
    assert len(tables) == 1 and "</table>" in tables[0].text  # the table stays whole...
    assert count_tokens(tables[0].text) > 120  # ...even over the budget
    assert all(count_tokens(c.text) <= 120 for c in chunks if c not in tables)
    abstract = [c for c in chunks if c.headings[-1] == "ABSTRACT"]
    assert len(abstract) >= 2 and all(c.blocks[-1]["bbox_norm"] == [85, 329, 481, 674] for c in abstract)


def test_every_block_keeps_its_page_and_box():
    chunks = chunk_pages(_pages(TITLE, EXAMPLE))
    blocks = [b for c in chunks for b in c.blocks]
    assert {"page": 0, "label": "title", "bbox": [round(171 / 999 * 612, 2), round(101 / 999 * 792, 2),
                                                  round(825 / 999 * 612, 2), round(150 / 999 * 792, 2)],
            "bbox_norm": [171, 101, 825, 150]} in blocks
    assert any(b["label"] == "image" for b in blocks)  # a figure keeps its box though it has no text
    assert sum(len(p.elements) for p in _pages(TITLE, EXAMPLE)) == len(blocks)


def test_page_headers_and_footers_stay_out_of_the_text_by_default():
    lead = "<|ref|>text<|/ref|><|det|>[[217, 60, 785, 100]]<|/det|>\n"  # the example page starts untagged
    pages = _pages(HEADER + TITLE + FOOTER, HEADER + lead + EXAMPLE + FOOTER)
    chunks = chunk_pages(pages)
    assert not any("Running head" in c.text or "Page 9 of 12" in c.text for c in chunks)
    assert sum(c.headers_footers.count("Page 9 of 12") for c in chunks) == 2
    assert sum(c.headers_footers.count("Running head of the preprint") for c in chunks) == 2
    kept = chunk_pages(pages, drop_headers_footers=False)
    assert any("Page 9 of 12" in c.text for c in kept)


def test_langchain_chunks_with_deterministic_ids():
    from dsocr_loaders.langchain import DeepSeekOCRLoader

    pdf = str(FIXTURES / "pdf" / "multi_page.pdf")
    reply = lambda r, n: OCRResponse(TITLE if n % 2 == 0 else EXAMPLE, "eos", 99)  # noqa: E731
    load = lambda: DeepSeekOCRLoader(pdf, engine=FakeEngine(reply, seed=1), pages="1-2", split="chunks",  # noqa: E731
                                     chunk_tokens=200).load()
    docs, again = load(), load()
    assert [d.id for d in docs] == [d.id for d in again] and len({d.id for d in docs}) == len(docs)
    first = docs[0]
    assert first.page_content.startswith("DocLayNet: A Large Human-Annotated Dataset for Document-Layout Analysis\n")
    assert json.loads(first.metadata["headings"])[0].startswith("DocLayNet") and first.metadata["chunk_index"] == 0
    assert json.loads(first.metadata["pages"]) == [0] and json.loads(first.metadata["ocr_blocks"])[0]["label"] == "title"
    assert first.metadata["source"] == pdf and "ocr_quality_verdict" in first.metadata
    other = DeepSeekOCRLoader(pdf, engine=FakeEngine(reply, seed=1), pages="1-2", split="chunks", chunk_tokens=100).load()
    assert other[0].id != first.id  # the budget is part of the id


def test_llama_index_chunk_nodes_are_linked():
    from llama_index.core.schema import NodeRelationship

    from dsocr_loaders.llama_index import DeepSeekOCRReader

    reply = lambda r, n: OCRResponse(TITLE if n % 2 == 0 else EXAMPLE, "eos", 99)  # noqa: E731
    reader = DeepSeekOCRReader(engine=FakeEngine(reply, seed=1), pages="1-2", split="chunks", chunk_tokens=200)
    nodes = reader.load_data(FIXTURES / "pdf" / "multi_page.pdf")
    assert len(nodes) > 3
    source = nodes[0].relationships[NodeRelationship.SOURCE].node_id
    assert all(n.relationships[NodeRelationship.SOURCE].node_id == source for n in nodes)
    for prev, nxt in zip(nodes, nodes[1:]):
        assert prev.relationships[NodeRelationship.NEXT].node_id == nxt.id_
        assert nxt.relationships[NodeRelationship.PREVIOUS].node_id == prev.id_
    assert "headings" not in nodes[0].excluded_embed_metadata_keys  # the heading path is embedded
    assert "ocr_blocks" in nodes[0].excluded_embed_metadata_keys


def test_cli_json_lists_the_chunks_and_the_summary_counts_suspect_pages(tmp_path, capsys):
    from conftest import GOLDEN
    from dsocr_loaders.apps.cli import main

    args = ["convert", str(FIXTURES / "pdf" / "multi_page.pdf"), "-o", str(tmp_path), "--pages", "1-2", "--model",
            str(GOLDEN), "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "8", "-q", "--no-cache",
            "--chunk-tokens", "64"]
    assert main(args) == 0
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert "chunks" in doc and all(set(c) >= {"text", "headings", "pages", "blocks"} for c in doc["chunks"])
    assert all(p["quality"]["verdict"] in ("good", "suspect", "bad") for p in doc["pages"])
    suspect = sum(p["quality"]["verdict"] != "good" for p in doc["pages"])
    assert f"{suspect} suspect" in capsys.readouterr().out and suspect == 2  # noise against a real text layer


@pytest.mark.parametrize("bad", [0, -5])
def test_chunk_budget_is_validated(bad):
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_pages([], chunk_tokens=bad)
