"""parse_page on real DeepSeek-OCR output (docling's fixtures) and on the forms servers and limits produce."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from conftest import FIXTURES
from dsocr_loaders import parse_page
from dsocr_loaders.ocr.grounding import EOS_TEXT, parse_boxes
from dsocr_loaders.ocr.tables import table_grid

RAW = FIXTURES / "deepseek_raw" / "docling_md_deepseek"


def raw(name: str) -> str:
    return (RAW / "sources" / f"deepseek_{name}.md").read_text()


def truth(name: str) -> tuple[str, dict]:
    md = (RAW / "groundtruth" / f"deepseek_{name}.md.md").read_text()
    return md, json.loads((RAW / "groundtruth" / f"deepseek_{name}.md.json").read_text())


def pipe_rows(md: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in md.splitlines()
            if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set("-: ") for c in r)]


def test_example_page_elements_and_table_match_docling():
    page = parse_page(raw("example"), 612, 792, "pt", table_format="markdown")
    assert page.status == "ok" and page.unit == "pt"
    labels = [e.label for e in page.elements]
    assert labels == ["text", "sub_title", "text", "table", "table_caption", "sub_title", "text", "text"]
    lead = page.elements[0]
    assert lead.bbox is None and lead.text.startswith("order to compute the TED score")  # kept, not dropped
    table, caption = page.elements[3], page.elements[4]
    assert caption.text.startswith("Table 1. HPO") and "|" not in caption.text
    gt_md, gt = truth("example")
    assert pipe_rows(table.text) == pipe_rows(gt_md)  # spans repeated exactly as docling does
    assert len(pipe_rows(table.text)) == 10 and len(pipe_rows(table.text)[0]) == 8
    # Every block docling kept is in our markdown, word for word.
    for block in gt_md.split("\n\n"):
        if not block.startswith("|"):
            assert block.strip() in page.markdown
    assert page.markdown.startswith("order to compute")


def test_boxes_match_docling_geometry():
    page = parse_page(raw("example"), 612, 792, "pt")
    _, gt = truth("example")
    ours = [e for e in page.elements if e.bbox and e.label != "table"]
    theirs = [t for t in gt["texts"]]
    assert len(ours) == len(theirs)
    for e, t in zip(ours, theirs):
        b = t["prov"][0]["bbox"]
        # docling divides the 0-999 grid by 1000, the official scripts by 999
        want = (b["l"] * 1000 / 999, b["t"] * 1000 / 999, b["r"] * 1000 / 999, b["b"] * 1000 / 999)
        assert e.bbox == pytest.approx(want, abs=0.02)
        assert 0 <= e.bbox[0] < e.bbox[2] <= 612 and 0 <= e.bbox[1] < e.bbox[3] <= 792
    tb = gt["tables"][0]["prov"][0]["bbox"]
    assert page.elements[3].bbox == pytest.approx((tb["l"] * 1000 / 999, tb["t"] * 1000 / 999,
                                                   tb["r"] * 1000 / 999, tb["b"] * 1000 / 999), abs=0.02)


def test_title_page_headings_latex_and_figure():
    page = parse_page(raw("title"), 612, 792, "pt")
    gt_md, _ = truth("title")
    assert page.markdown.splitlines()[0] == gt_md.splitlines()[0]  # "# DocLayNet: ..."
    headings = [ln for ln in page.markdown.splitlines() if ln.startswith("#")]
    assert headings == [ln for ln in gt_md.splitlines() if ln.startswith("#")]
    assert r"\(\rightarrow\)" in page.markdown  # LaTeX kept as written
    assert "<center>" not in page.markdown and "Figure 1: Four examples" in page.markdown
    (fig,) = page.figures
    assert fig.bbox_norm == (530, 310, 905, 666) and fig.figure_id == "0_0" and fig.image_name is None
    assert "[image 0_0]" in page.markdown and "](" not in page.markdown  # no crop saved: a placeholder, no link
    assert fig.image is None  # no page image given
    authors = [e for e in page.elements if e.label == "text"][:5]
    assert len({e.bbox[1] for e in authors[:3]}) == 1  # side-by-side boxes share a row


def test_figure_crops_from_the_page_image():
    img = Image.open(FIXTURES / "images" / "2305.03393v1-pg9-img.png").convert("RGB")
    text = "<|ref|>image<|/ref|><|det|>[[100, 200, 500, 600]]<|/det|>\n\n<|ref|>text<|/ref|><|det|>[[0, 0, 10, 10]]<|/det|>\nhi"
    page = parse_page(text, img.width, img.height, "px", page=3, image=img)
    (fig,) = page.figures
    assert fig.image.size == (int(500 / 999 * 1275) - int(100 / 999 * 1275), int(600 / 999 * 1650) - int(200 / 999 * 1650))
    assert fig.bbox == (round(100 / 999 * 1275, 2), round(200 / 999 * 1650, 2), round(500 / 999 * 1275, 2),
                        round(600 / 999 * 1650, 2))
    assert page.markdown == "[image 3_0]\n\nhi"


def test_tag_stripped_output_parses_like_tagged():
    tagged = raw("example")
    stripped = re.sub(r"<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>", r"\1\2", tagged)
    assert "<|" not in stripped and "sub_title[[217, 209, 520, 225]]" in stripped
    a, b = parse_page(tagged, 612, 792, "pt"), parse_page(stripped, 612, 792, "pt")
    assert [(e.label, e.bbox, e.text) for e in a.elements] == [(e.label, e.bbox, e.text) for e in b.elements]
    assert a.markdown == b.markdown


def test_several_boxes_unknown_labels_and_no_eval():
    text = ("<|ref|>footnote<|/ref|><|det|>[[10, 20, 30, 40], [50, 60, 70, 80]]<|/det|>\nnote\n\n"
            "<|ref|>text<|/ref|><|det|>[[__import__('os').system('echo pwned')]]<|/det|>\nbody")
    page = parse_page(text, 999, 999)
    note, body = page.elements
    assert note.label == "footnote" and note.text == "note"
    assert note.bbox_norm == (10, 20, 70, 80) and note.boxes_norm == [(10, 20, 30, 40), (50, 60, 70, 80)]
    assert body.bbox is None and body.text == "body"
    assert parse_boxes("[[999, 5, 1200, 0]]") == [(999, 0, 999, 5)]  # clamped to the grid, corners ordered


@pytest.mark.parametrize("cut", [
    "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\nfirst\n\n<|ref|>text<|/ref|><|det|>[[5, 6, 7",
    "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\nfirst\n\n<|re",
    "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\nfirst\n\n<table><tr><td>a</td><td>b",
])
def test_truncated_output_keeps_what_is_complete(cut):
    page = parse_page(cut, 999, 999)
    assert page.status == "truncated"
    assert page.elements[0].bbox_norm == (1, 2, 3, 4) and page.elements[0].text.startswith("first")
    assert "<|" not in page.markdown
    md_tables = parse_page(cut, 999, 999, table_format="markdown")
    assert md_tables.status == "truncated"


def test_status_from_finish_reason_and_eos():
    done = parse_page("hello" + EOS_TEXT, 10, 10)
    assert done.finish_reason == "eos" and done.status == "ok" and done.markdown == "hello"
    assert parse_page("hello", 10, 10, finish_reason="length").status == "truncated"
    assert parse_page("  \n" + EOS_TEXT, 10, 10).status == "empty"
    located = parse_page("<|ref|>the cat<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>", 100, 100, finish_reason="eos")
    assert located.status == "ok" and located.elements[0].label == "the cat" and located.markdown == ""


def test_official_cleanups():
    text = "<|ref|>equation<|/ref|><|det|>[[0, 0, 9, 9]]<|/det|>\n\\[a \\coloneqq b \\eqqcolon c\\]   \n\n\n\n\nnext"
    page = parse_page(text, 10, 10)
    assert page.markdown == "\\[a := b =: c\\]\n\nnext"


def test_table_grid_spans():
    html = ('<table><tr><td rowspan="2">a</td><td colspan="2">b</td></tr>'
            '<tr><td>c</td><td>d &amp; e</td></tr></table>')
    assert table_grid(html) == [["a", "b", "b"], ["a", "c", "d & e"]]


def test_right_to_left_text_passes_through_unchanged():
    arabic = "<|ref|>text<|/ref|><|det|>[[80, 90, 920, 200]]<|/det|>\nمرحبا بالعالم، هذا نص عربي مع Python و R."
    page = parse_page(arabic, 612, 792, "pt")
    assert page.elements[0].text == "مرحبا بالعالم، هذا نص عربي مع Python و R."
    assert page.markdown == page.elements[0].text


# Unlimited-OCR's output, as its transformers integration test prints it (FAMILY.md §3.6).
UNLIMITED = ("<|det|>image [383, 87, 497, 171]<|/det|>\n<|det|>title [333, 201, 556, 230]<|/det|>R&D QUALITY "
             "IMPROVEMENT\nSUGGESTION/SOLUTION FORM\n<|det|>text [100, 300, 900, 400]<|/det|>Name: ____")


@pytest.mark.parametrize("hint", [None, "det_label", "ref_det"])
@pytest.mark.parametrize("stripped", [False, True], ids=["tagged", "special-tokens-stripped"])
def test_unlimited_ocr_det_label_dialect(stripped, hint):
    """Recognised by itself: the model's hint only orders the attempts."""
    text = UNLIMITED.replace("<|det|>", "").replace("<|/det|>", "") if stripped else UNLIMITED
    page = parse_page(text, 1000, 2000, "px", box_syntax=hint)
    assert [(e.label, e.bbox_norm) for e in page.elements] == [
        ("image", (383, 87, 497, 171)), ("title", (333, 201, 556, 230)), ("text", (100, 300, 900, 400))]
    assert page.elements[1].text.startswith("R&D QUALITY IMPROVEMENT") and page.elements[1].bbox[1] == round(201 / 999 * 2000, 2)
    assert page.markdown.startswith("[image 0_0]\n\nR&D QUALITY") and "[333" not in page.markdown and "<|" not in page.markdown
    assert page.status == "ok"
    v1 = "<|ref|>title<|/ref|><|det|>[[10, 20, 300, 60]]<|/det|>\n# Heading"  # v1's form under either hint
    assert [e.label for e in parse_page(v1, 100, 100, box_syntax=hint).elements] == ["title"]
    v1_stripped = "title[[10, 20, 300, 60]]\n# Heading"
    assert [e.bbox_norm for e in parse_page(v1_stripped, 100, 100, box_syntax=hint).elements] == [(10, 20, 300, 60)]
    cut = parse_page(UNLIMITED[:60], 1000, 2000, box_syntax=hint)  # cut inside the second tag
    assert [e.label for e in cut.elements][:1] == ["image"] and cut.status == "truncated"


def test_a_page_of_a_multi_page_answer_drops_its_page_marker():
    page = parse_page("<PAGE>\n" + UNLIMITED, 1000, 2000)
    assert page.elements[0].label == "image" and "<PAGE>" not in page.markdown
    assert "<PAGE>" in parse_page("text about the <PAGE> tag", 100, 100).markdown  # only a leading marker goes


def test_the_pipeline_reads_its_models_box_dialect():
    import dataclasses

    from dsocr_loaders import OCRPipeline, OCRResponse
    from dsocr_model import DEEPSEEK_OCR
    from test_pipeline import FakeEngine

    engine = FakeEngine(lambda r, n: OCRResponse(UNLIMITED, "eos", 9))
    engine.spec = dataclasses.replace(DEEPSEEK_OCR, name="det-label-ocr", box_syntax="det_label")
    (r,) = OCRPipeline(engine).run(FIXTURES / "pdf" / "multi_page.pdf", pages=[0])
    assert [e.label for e in r.elements] == ["image", "title", "text"] and r.elements[2].bbox is not None
