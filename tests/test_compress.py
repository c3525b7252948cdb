"""Optical context compression, the CPU checks of COMPRESSION.md §4.8 that this slice covers: determinism,
lossless partition, glyph coverage, the counts, metric parity and calibration."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageChops

from dsocr_loaders.compress import (DoesNotFitError, MissingGlyphError, compression_stats, fidelity, normalize,
                                    render_text_pages)
from dsocr_loaders.compress.count import page_tokens
from dsocr_loaders.compress.fidelity import levenshtein
from dsocr_model.family.deepseek_ocr import DEEPSEEK_OCR

PROSE = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
         "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
         "was the season of Darkness.\n\nThere were a king with a large jaw and a queen with a plain face, on the "
         "throne of England; there were a king with a large jaw and a queen with a fair face, on the throne of "
         "France. ") * 12  # Dickens, A Tale of Two Cities (1859), public domain


def words(text: str) -> int:  # a toy tokenizer: CI has no DeepSeek tokenizer
    return len(text.split())


def test_rendering_is_deterministic():
    first, second = render_text_pages(PROSE, mode="tiny"), render_text_pages(PROSE, mode="tiny")
    assert len(first) > 1 and [p.png() for p in first] == [p.png() for p in second]
    assert len({p.config_hash for p in first + second}) == 1
    assert render_text_pages(PROSE, mode="tiny", font_px=13)[0].config_hash != first[0].config_hash


@pytest.mark.parametrize("mode, side", [("tiny", 512), ("small", 640), ("base", 1024), ("large", 1280), ("gundam", 1280)])
def test_pages_partition_the_text_exactly_on_the_mode_canvas(mode, side):
    text = "Line one.\r\nA\tline with a tab and averyveryverylongwordthatcannotpossiblyfitonasinglelineofthepageatall" \
           + "x" * 400 + "\n\n" + PROSE
    pages = render_text_pages(text, mode=mode, font_px=14)
    assert "".join(p.text for p in pages) == normalize(text)
    assert [p.span[0] for p in pages[1:]] == [p.span[1] for p in pages[:-1]] and pages[0].span[0] == 0
    margin = round(0.03 * side)
    for p in pages:
        assert p.image.size == (side, side)
        ink = ImageChops.invert(p.image.convert("L")).getbbox()
        assert ink is None or (ink[0] >= margin - 1 and ink[1] >= margin - 1 and ink[2] <= side - margin + 1
                               and ink[3] <= side - margin + 1)


def test_glyph_coverage_is_checked():
    render_text_pages("Latin text and Кириллица, Ελληνικά too.", mode="tiny")
    with pytest.raises(MissingGlyphError) as e:
        render_text_pages("中文字 and 日本語", mode="tiny")
    assert "U+4E2D" in str(e.value) and set(e.value.code_points) == set("中文字日本語")


def test_one_page_shrinks_the_font_or_says_it_cannot():
    (page,) = render_text_pages(PROSE, mode="small", fit="one_page", font_px=14)
    assert page.font_px < 14 and page.text == normalize(PROSE)
    with pytest.raises(DoesNotFitError):
        render_text_pages(PROSE * 3, mode="tiny", fit="one_page", min_font_px=6)


def test_counts_follow_the_models_geometry():
    paper = {m: page_tokens(render_text_pages("x", mode=m)[0]) for m in ("tiny", "small", "base", "large", "gundam")}
    assert {m: v[0] for m, v in paper.items()} == {"tiny": 64, "small": 100, "base": 256, "large": 400,
                                                   "gundam": 256 + 4 * 100}
    assert {m: v[2] for m, v in paper.items()} == {"tiny": 73, "small": 111, "base": 273, "large": 421,
                                                   "gundam": DEEPSEEK_OCR.image_token_count(1280, 1280, "gundam")}
    assert DEEPSEEK_OCR.valid_vision_tokens(1000, 600, "base") == int(256 * 600 / 1000)  # eq. 1 on a non-square page
    pages = render_text_pages(PROSE, mode="small")
    stats = compression_stats(PROSE, pages, tokenizer=words)
    assert stats.text_tokens == words(PROSE) and stats.vision_tokens == 100 * len(pages)
    assert stats.ratio == pytest.approx(words(PROSE) / (100 * len(pages)))
    assert compression_stats(PROSE, pages, tokenizer=words, count="decoder").ratio < stats.ratio


def test_fidelity_metrics_match_hand_computed_values():
    f = fidelity("the cat sat on the mat", "the cat sat on a mat mat")
    assert (f.precision, f.recall, f.fox_precision) == (5 / 6, 1.0, 1.0)
    assert f.f1 == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    assert levenshtein("kitten", "sitting") == 3
    assert f.edit_distance == pytest.approx(levenshtein("the cat sat on a mat mat", "the cat sat on the mat") / 24)
    assert fidelity("Hello, world!", "hello world").edit_distance_normalized == pytest.approx(1 / 10)
    cjk = fidelity("中文字", "中文")
    assert cjk.tokenizer == "chars" and cjk.precision == 1.0 and cjk.recall == pytest.approx(2 / 3)


def test_pure_python_levenshtein_equals_rapidfuzz(monkeypatch):
    import builtins

    pairs = [("kitten", "sitting"), ("", "abc"), ("optical compression", "optical decompression!")]
    fast = [levenshtein(a, b) for a, b in pairs]
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("rapidfuzz") else real_import(name, *a, **k))
    assert [levenshtein(a, b) for a, b in pairs] == fast


@pytest.mark.parametrize("target", [5.0, 10.0, 20.0])
def test_target_ratio_is_calibrated_within_ten_percent(target):
    text = PROSE * 8
    pages = render_text_pages(text, mode="small", target_ratio=target, tokenizer=words)
    full = pages[:-1]  # the last page is partly empty
    ratio = sum(words(p.text) for p in full) / (100 * len(full))
    assert abs(ratio - target) / target <= 0.10, (ratio, pages[0].font_px)


# Paper Table 2: per bin of text tokens, the mean ratio for Tiny (64 tokens) and Small (100). Synthetic pages whose
# token counts have bin means that round to both columns (no Fox data here: its licence is non-commercial).
TABLE2 = [(600, 672, 10.5, 6.7), (700, 753, 11.8, 7.5), (800, 846, 13.2, 8.5), (900, 966, 15.1, 9.7),
          (1000, 1056, 16.5, 10.6), (1100, 1132, 17.7, 11.3), (1200, 1261, 19.7, 12.6)]


def test_study_aggregation_reproduces_table_2_arithmetic():
    from dsocr_loaders.compress import StudyRow, StudyTable

    table = StudyTable(("tiny", "small"), tuple(range(600, 1301, 100)))
    for _, mean, _, _ in TABLE2:
        for delta in (-20, 0, 20):  # three pages per bin, their mean is `mean`
            for mode, vision in (("tiny", 64), ("small", 100)):
                table.rows.append(StudyRow(mode, mean + delta, vision, 0.9, 0.8, 0.85, 0.1))
    cells = table.cells()
    assert [round(c["tiny"]["ratio"], 1) for c in cells] == [t for _, _, t, _ in TABLE2]
    assert [round(c["small"]["ratio"], 1) for c in cells] == [s for _, _, _, s in TABLE2]
    assert all(c["pages"] == 3 for c in cells)
    md = table.to_markdown()
    assert "| 600–700 | 3 | 90.0% | 10.5× | 90.0% | 6.7× |" in md and md.count("\n") == len(cells) + 1


def test_decompress_and_study_run_end_to_end_on_the_tiny_model():
    """Statuses and numbers are produced for every page (their values mean nothing on random weights)."""
    from conftest import GOLDEN
    from dsocr_loaders import LocalEngine
    from dsocr_loaders.compress import compression_study, decompress, join_decodes

    pages = render_text_pages(PROSE[:1500], mode="tiny", font_px=16)
    with LocalEngine(str(GOLDEN), device="cpu") as engine:
        decoded = decompress(pages, engine=engine, max_new_tokens=6)
        assert len(decoded) == len(pages) and all(d.status in ("ok", "max_tokens", "repetition") for d in decoded)
        assert all(d.generated_tokens for d in decoded) and join_decodes(decoded).count("\n") >= len(pages) - 1
        table = compression_study([PROSE[:600], PROSE[:900]], modes=("tiny",), engine=engine, tokenizer=words,
                                  bins=(0, 100, 200))
    assert len(table.rows) == 2 and all(0 <= r.precision <= 1 and r.ratio > 0 for r in table.rows)


def test_cli_render_and_compress_study(tmp_path, capsys):
    import json

    from conftest import GOLDEN
    from dsocr_loaders.apps.cli import main

    source = tmp_path / "tale.txt"
    source.write_text(PROSE[:3000], encoding="utf-8")
    assert main(["render", str(source), "-o", str(tmp_path / "pages"), "--mode", "small", "--target-ratio", "10"]) == 0
    meta = json.loads((tmp_path / "pages" / "pages.json").read_text())
    assert len(meta) == len(list((tmp_path / "pages").glob("page_*.png"))) >= 1 and meta[0]["mode"] == "small"
    assert main(["render", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "x")]) == 2
    short = tmp_path / "short.txt"
    short.write_text(PROSE[:300], encoding="utf-8")
    assert main(["compress-study", str(short), "--modes", "tiny", "--model", str(GOLDEN), "--device", "cpu"]) == 0
    assert "| text tokens | pages | tiny precision | tiny ratio |" in capsys.readouterr().out


def test_framework_adapters_end_to_end_on_the_tiny_model(tmp_path):
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeRelationship, TextNode

    from conftest import GOLDEN
    from dsocr_loaders import LocalEngine
    from dsocr_loaders.compress.adapters import langchain_compressor, llama_index_transform

    with LocalEngine(str(GOLDEN), device="cpu") as engine:
        compressor = langchain_compressor()(image_dir=tmp_path / "lc", mode="tiny", font_px=16, engine=engine,
                                            verify=True)
        docs = compressor.transform_documents([Document(PROSE[:1500], metadata={"title": "Tale"}, id="doc-1")])
        again = langchain_compressor()(image_dir=tmp_path / "lc", mode="tiny", font_px=16).transform_documents(
            [Document(PROSE[:1500], metadata={"title": "Tale"}, id="doc-1")])
    assert len(docs) > 1 and "".join(d.page_content for d in docs) == normalize(PROSE[:1500])
    assert [d.id for d in docs] == [d.id for d in again] and len({d.id for d in docs}) == len(docs)
    first = docs[0].metadata
    assert first["title"] == "Tale" and first["dsocr_vision_tokens"] == 64 and Path(first["dsocr_image_path"]).is_file()
    assert first["dsocr_status"] in ("ok", "max_tokens", "repetition") and 0 <= first["dsocr_precision"] <= 1
    assert not any(isinstance(v, str) and v.startswith("iVBOR") for v in first.values())  # no base64 image
    nodes = llama_index_transform()(image_dir=str(tmp_path / "li"), mode="tiny", font_px=16)(
        [TextNode(text=PROSE[:1500], id_="node-1")])
    assert len(nodes) == len(docs) and nodes[0].image_path and nodes[0].text == docs[0].page_content
    assert nodes[0].relationships[NodeRelationship.SOURCE].node_id == "node-1"
    assert "dsocr_ratio" in nodes[0].excluded_embed_metadata_keys


def _box_font(path: Path, chars: str) -> Path:
    """A minimal TrueType font covering `chars` (solid boxes), written with fontTools: a CJK stand-in."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef", "space"] + [f"uni{ord(c):04X}" for c in chars]
    glyphs = {}
    for i, name in enumerate(names):
        pen = TTGlyphPen(None)
        if name != "space":  # .notdef a thin frame, the others solid boxes of varied heights
            x1, y1 = (100, 700) if name == ".notdef" else (900, 750 - (i % 5) * 100)
            pen.moveTo((50, 0)), pen.lineTo((50, y1)), pen.lineTo((x1, y1)), pen.lineTo((x1, 0)), pen.closePath()
        glyphs[name] = pen.glyph()
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({32: "space", **{ord(c): f"uni{ord(c):04X}" for c in chars}})
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({n: (1000, 50) for n in names})
    fb.setupHorizontalHeader(ascent=900, descent=-100)
    fb.setupNameTable({"familyName": "BoxCJK", "styleName": "Regular"})
    fb.setupOS2()
    fb.setupPost()
    fb.save(str(path))
    return path


def test_cjk_text_renders_with_a_font_that_covers_it(tmp_path):
    font = _box_font(tmp_path / "box-cjk.ttf", "中文字日本語")
    pages = render_text_pages("中文字 日本語\n" * 30, mode="tiny", font=font, font_px=20)
    assert "".join(p.text for p in pages) == normalize("中文字 日本語\n" * 30)
    assert pages[0].image.convert("L").getextrema()[0] < 50  # ink was drawn
    with pytest.raises(MissingGlyphError, match=r"U\+0041"):
        render_text_pages("中文 A", mode="tiny", font=font)  # the stand-in has no Latin


def test_gundam_calibration_counts_its_real_tokens():
    """Gundam pages are a 1024 global view and 2x2 tiles of 640: 256 + 4 x 100 = 656 tokens, not 4 x 400."""
    text = PROSE * 8
    pages = render_text_pages(text, mode="gundam", target_ratio=4, tokenizer=words)
    full = pages[:-1]
    assert page_tokens(full[0])[0] == 656
    ratio = sum(words(p.text) for p in full) / (656 * len(full))
    assert abs(ratio - 4) / 4 <= 0.10, (ratio, pages[0].font_px)


def test_text_of_the_wrong_type_is_a_clear_error():
    with pytest.raises(TypeError, match="text must be a str"):
        render_text_pages(b"bytes", mode="tiny")
    (blank,) = render_text_pages("", mode="tiny")  # empty text: one blank page, its span empty
    assert blank.span == (0, 0) and blank.text == ""
