"""`dsocr convert` end to end on fixture PDFs with the tiny checkpoint: files, statuses, exit codes, cache."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, GOLDEN
from dsocr_loaders.apps.cli import main, safe_name

PDF = FIXTURES / "pdf"
TINY = ["--model", str(GOLDEN), "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "6", "-q"]


def test_convert_writes_files_and_second_run_is_cached(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["convert", str(PDF / "multi_page.pdf"), str(PDF / "c02-22.pdf"), "-o", str(out), "--pages", "1",
            "--cache-dir", str(cache), *TINY]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "2 pages" in first and "0 failed" in first and "0 from cache" in first
    doc = json.loads((out / "multi_page.json").read_text())
    assert [p["page"] for p in doc["pages"]] == [0] and doc["pages"][0]["status"] == "truncated"
    assert (out / "multi_page.md").read_text() == doc["pages"][0]["markdown"]
    assert (out / "c02-22.md").exists()
    assert main(args) == 0
    assert "2 from cache" in capsys.readouterr().out


def test_failed_pages_give_exit_code_1_and_bad_arguments_2(tmp_path, capsys):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00junk" * 40)
    code = main(["convert", str(tmp_path / "broken.pdf"), str(PDF / "c02-22.pdf"), "-o", str(tmp_path / "o"),
                 "--no-cache", "--format", "json", *TINY])
    assert code == 1 and "1 failed" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "broken.json").read_text())["pages"][0]["status"] == "error"
    assert not (tmp_path / "o" / "c02-22.md").exists()  # --format json only
    assert main(["convert", str(PDF / "c02-22.pdf"), "-o", str(tmp_path / "o"), "--format", "docx", *TINY]) == 2
    assert main(["convert", str(tmp_path / "missing.pdf"), "-o", str(tmp_path / "o"), *TINY]) == 2


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/b\\..\\c.pdf", "", "con:..", "\x00x"])
def test_output_names_stay_inside_the_folder(tmp_path, name):
    stem = safe_name(name)
    target = (tmp_path / f"{stem}.md").resolve()
    assert target.parent == tmp_path.resolve() and stem and "/" not in stem and stem not in (".", "..")


def test_console_entry_points():
    out = subprocess.run([sys.executable, "-m", "dsocr_loaders", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("dsocr ")
    helps = subprocess.run([sys.executable, "-m", "dsocr_loaders", "convert", "--help"], capture_output=True, text=True)
    assert all(f in helps.stdout for f in ("--pages", "--no-cache", "--layout", "--base-url", "exit codes"))


def test_progress_bar_knows_the_total_up_front(tmp_path, capsys):
    """The bar has a total (so tqdm shows pages/s and an ETA): pages are counted before any OCR."""
    from dsocr_loaders.ocr.sources import count_pages

    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00junk" * 40)
    img = FIXTURES / "images" / "Portrait_6.jpg"
    inputs = [PDF / "multi_page.pdf", tmp_path / "broken.pdf", img]
    assert count_pages(inputs) == 5 + 1 + 1  # a source that cannot be opened is one error page
    assert count_pages(inputs, "2-3") == 2 + 1 + 0  # the image has no page 2: skipped, not failed
    code = main(["convert", str(PDF / "multi_page.pdf"), "-o", str(tmp_path / "o"), "--pages", "2-3", "--no-cache",
                 *[a for a in TINY if a != "-q"]])
    assert code == 0
    err = capsys.readouterr().err
    assert "2/2" in err and ("page/s" in err or "s/page" in err)


def test_hostile_input_names_write_only_inside_the_output_folder(tmp_path):
    """Real files whose names would escape OUTDIR if used as they are ('..\\..\\x' is a legal Linux name)."""
    src, out = tmp_path / "in", tmp_path / "deep" / "out"
    src.mkdir()
    names = ["..\\..\\evil.pdf", "...pdf", "a\nb.pdf", "CON .pdf"]
    for n in names:
        (src / n).write_bytes((PDF / "c02-22.pdf").read_bytes())
    before = set(tmp_path.rglob("*"))
    assert main(["convert", *[str(src / n) for n in names], "-o", str(out), "--format", "md", "--no-cache", *TINY]) == 0
    written = set(tmp_path.rglob("*")) - before
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written if p.is_file())
    assert len([p for p in written if p.suffix == ".md"]) == len(names)  # none overwrote another


def test_figures_named_per_document_linked_relative_and_no_empty_folders(tmp_path):
    """--figures: crops named per document, links and JSON image_name relative to the .md, no folder for a
    document without figures, and no link to a file that was not written."""
    from PIL import Image

    from dsocr_loaders import OCRPipeline, OCRResponse, OCRSettings
    from dsocr_loaders.ocr.ids import save_figures
    from test_pipeline import FakeEngine

    fig = "<|ref|>image<|/ref|><|det|>[[100, 100, 600, 500]]<|/det|>\n\n<|ref|>text<|/ref|><|det|>[[0, 0, 9, 9]]<|/det|>\nx"
    img = tmp_path / "scan.png"
    Image.new("RGB", (400, 300), "white").save(img)
    (r,) = OCRPipeline(FakeEngine(lambda q, n: OCRResponse(fig, "eos", 9)), ocr=OCRSettings(mode="tiny")).run(img)
    save_figures(r, tmp_path / "out" / "scan_images", "scan", link_base="scan_images")
    assert (tmp_path / "out" / "scan_images" / "scan_0_0.jpg").exists()
    assert r.figures[0].image_name == "scan_images/scan_0_0.jpg" and "![image](scan_images/scan_0_0.jpg)" in r.markdown
    (text_only,) = OCRPipeline(FakeEngine(lambda q, n: OCRResponse("just text", "eos", 3))).run(img)
    save_figures(text_only, tmp_path / "out" / "plain_images", "plain")
    assert not (tmp_path / "out" / "plain_images").exists()  # nothing to save: no folder
    out = tmp_path / "cli"
    assert main(["convert", str(PDF / "c02-22.pdf"), "-o", str(out), "--figures", "--no-cache", *TINY]) == 0
    assert not (out / "c02-22_images").exists()  # the tiny model's noise has no figure: no empty folder
