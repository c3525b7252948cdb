"""Sources: real fixture PDFs and images, page selection, lazy rendering, conversions, typed errors."""
from __future__ import annotations

import gc
import io
import weakref
from itertools import islice

import numpy as np
import pymupdf
import pytest
from PIL import Image

from conftest import FIXTURES
from dsocr_loaders import (CorruptFileError, RenderSettings, EmptyInputError, OCRPipeline, PageRangeError, PasswordError,
                           TooLargeError, UnsupportedFormatError, parse_pages)
from dsocr_loaders.ocr.sources import iter_inputs, pdf_date

PDF, IMG = FIXTURES / "pdf", FIXTURES / "images"


def pages_of(source, **kw):
    """Rendered pages through the pipeline's own source stage (no engine needed)."""
    render = RenderSettings(**{k: kw.pop(k) for k in ("dpi", "glob") if k in kw})
    return list(OCRPipeline(render=render, on_error=kw.pop("on_error", "raise")).iter_pages(source, **kw))


@pytest.mark.parametrize("spec,total,want", [
    ("1-3,7", 10, [0, 1, 2, 6]), ("7, 1-2", 10, [0, 1, 6]), ("5-", 6, [4, 5]), ("-2", 6, [0, 1]),
    ([3, 0, 3], 5, [0, 3]), (2, 5, [2]), (None, 3, [0, 1, 2]), (range(1, 3), 4, [1, 2]),
])
def test_parse_pages(spec, total, want):
    assert parse_pages(spec, total) == want


@pytest.mark.parametrize("spec", ["0-2", "4-9", "a", "3-1", [5], [-1]])
def test_bad_page_selection_is_a_typed_error(spec):
    with pytest.raises(PageRangeError):
        parse_pages(spec, 5, "doc.pdf")


def test_multi_page_pdf_pages_labels_metadata():
    pages = pages_of(PDF / "multi_page.pdf", pages="2-3,5")
    assert [p.page for p in pages] == [1, 2, 4]
    assert [p.page_label for p in pages] == ["2", "3", "5"]
    p = pages[0]
    assert p.total_pages == 5 and p.unit == "pt" and p.rotation == 0
    assert (round(p.width), round(p.height)) == (595, 842)  # A4 in points
    assert p.image.mode == "RGB" and abs(p.image.width - p.width * 2) <= 1  # 144 dpi = zoom 2
    assert p.doc_metadata["creationdate"] == "2025-01-24T13:59:15+00:00"
    assert "Quartz" in p.doc_metadata["producer"]
    assert pages_of(PDF / "multi_page.pdf", pages=[0], dpi=72)[0].image.width in (595, 596)  # 595.2 pt


def test_rotated_scan_renders_upright_portrait():
    (p,) = pages_of(PDF / "sample_with_rotation_mismatch.pdf")
    assert p.rotation == 90
    assert (p.width, p.height) == (595.0, 842.0)  # MediaBox 842 x 595 shown turned
    assert p.image.size == (1190, 1684)


def test_page_labels_come_from_the_pdf(tmp_path):
    doc = pymupdf.open()
    for _ in range(4):
        doc.new_page()
    doc.set_page_labels([{"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1},
                         {"startpage": 2, "prefix": "A-", "style": "D", "firstpagenum": 1}])
    doc.save(tmp_path / "labels.pdf")
    assert [p.page_label for p in pages_of(tmp_path / "labels.pdf", dpi=10)] == ["i", "ii", "A-1", "A-2"]


def test_pdf_streams_page_by_page(tmp_path):
    """A 2,800-page PDF: pages come one at a time and nothing keeps the ones already handed out."""
    doc = pymupdf.open()
    for i in range(2800):
        doc.new_page(width=200, height=300).insert_text((20, 40), f"page {i + 1}")
    doc.save(tmp_path / "long.pdf")
    alive = []
    for p in islice(OCRPipeline(render=RenderSettings(dpi=20)).iter_pages(tmp_path / "long.pdf"), 60):
        alive.append(weakref.ref(p.image))
        last = p
    gc.collect()
    assert last.page == 59 and last.total_pages == 2800
    assert sum(r() is not None for r in alive) == 1  # only `last` is still referenced


def test_encrypted_pdf_needs_the_right_password():
    path = PDF / "2206.01062_pg3_password_1234.pdf"
    with pytest.raises(PasswordError, match="encrypted"):
        pages_of(path)
    with pytest.raises(PasswordError, match="wrong password"):
        pages_of(path, password="nope")
    (p,) = pages_of(path, password="1234")
    assert p.image.size == (1224, 1584) and p.total_pages == 1


def test_bad_inputs_give_typed_errors(tmp_path):
    real = (PDF / "multi_page.pdf").read_bytes()
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("just text")
    (tmp_path / "cut.pdf").write_bytes(real[:3000])
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50)
    (tmp_path / "cut.png").write_bytes((IMG / "2305.03393v1-pg9-img.png").read_bytes()[:5000])
    cases = {"empty.pdf": EmptyInputError, "notes.txt": UnsupportedFormatError, "cut.pdf": CorruptFileError,
             "garbage.pdf": CorruptFileError, "cut.png": CorruptFileError}
    for name, error in cases.items():
        with pytest.raises(error, match=name):
            pages_of(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        pages_of(tmp_path / "missing.pdf")
    with pytest.raises(TypeError):
        pages_of(12.5)


def test_bad_source_in_a_batch_becomes_an_error_page(tmp_path):
    (tmp_path / "a_empty.pdf").write_bytes(b"")
    pages = pages_of([tmp_path / "a_empty.pdf", PDF / "c02-22.pdf"], on_error="page", dpi=36)
    assert pages[0].status == "error" and "EmptyInputError" in pages[0].error
    assert pages[1].page == 0 and pages[1].image is not None


def test_bytes_file_objects_lists_and_directories():
    data = (PDF / "c02-22.pdf").read_bytes()
    assert pages_of(data, dpi=36)[0].source == "<bytes>"
    with open(PDF / "c02-22.pdf", "rb") as f:
        assert pages_of(f, dpi=36)[0].source.endswith("c02-22.pdf")
    assert pages_of(io.BytesIO(data), dpi=36)[0].image.size == pages_of(data, dpi=36)[0].image.size
    both = pages_of([PDF / "c02-22.pdf", IMG / "double-column-A.jpg"], dpi=36)
    assert [p.unit for p in both] == ["pt", "px"]
    names = [n for n, _ in iter_inputs(IMG, glob="*.jpg")]
    assert [n.rsplit("/", 1)[-1] for n in names] == ["Portrait_6.jpg", "double-column-A.jpg"]
    assert len(list(iter_inputs(FIXTURES))) == 10  # every PDF and image below, no README or sums


def test_real_images_exif_and_alpha():
    (portrait,) = pages_of(IMG / "Portrait_6.jpg")
    assert portrait.image.size == (1200, 1800)  # stored 1800 x 1200 with EXIF orientation 6
    (rgba,) = pages_of(IMG / "2305.03393v1-pg9-img.png")
    assert rgba.image.mode == "RGB" and (rgba.width, rgba.height, rgba.unit) == (1275.0, 1650.0, "px")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_modes_and_formats_become_rgb():
    clear = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    la = Image.new("LA", (40, 30), (0, 0))
    pal = Image.new("P", (40, 30), 0)
    pal.info["transparency"] = 0
    deep = Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16))
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # red in CMYK
    cases = {
        "rgba.png": (_encode(clear, "PNG"), (255, 255, 255)),
        "la.png": (_encode(la, "PNG"), (255, 255, 255)),
        "p.gif": (_encode(pal, "GIF", transparency=0), (255, 255, 255)),
        "16bit.png": (_encode(deep, "PNG"), (255, 255, 255)),
        "cmyk.jpg": (_encode(cmyk, "JPEG", quality=100), None),
        "img.webp": (_encode(Image.new("RGB", (40, 30), (0, 0, 255)), "WEBP", lossless=True), (0, 0, 255)),
        "img.bmp": (_encode(Image.new("RGB", (40, 30), (0, 255, 0)), "BMP"), (0, 255, 0)),
    }
    for name, (data, pixel) in cases.items():
        (p,) = pages_of(data)
        assert p.image.mode == "RGB" and p.image.size == (40, 30), name
        if pixel is not None:
            assert p.image.getpixel((5, 5)) == pixel, name
    red = pages_of(cases["cmyk.jpg"][0])[0].image.getpixel((5, 5))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_tiff_frames_are_pages_gif_is_one():
    frames = [Image.new("RGB", (50, 40), c) for c in ("red", "green", "blue")]
    tiff = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    pages = pages_of(tiff, pages="2-3")
    assert [p.page for p in pages] == [1, 2] and pages[0].total_pages == 3
    assert pages[1].image.getpixel((0, 0)) == (0, 0, 255)
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    (only,) = pages_of(gif)
    assert only.total_pages == 1 and only.image.getpixel((0, 0))[0] > 200


def test_pdf_dates():
    assert pdf_date("D:20220809113013+02'00'") == "2022-08-09T11:30:13+02:00"
    assert pdf_date("D:2021") == "2021-01-01T00:00:00"
    assert pdf_date("D:20200101120000Z") == "2020-01-01T12:00:00+00:00"
    assert pdf_date("yesterday") == "yesterday"


def test_scanned_and_right_to_left_pages():
    (scan,) = pages_of(PDF / "c02-22.pdf")
    assert (scan.width, round(scan.height, 2)) == (384.0, 470.88) and scan.image.size == (768, 942)
    assert np.asarray(scan.image).std() > 20  # the scanned picture itself, not a blank page
    (arabic,) = pages_of(PDF / "right_to_left_01.pdf")
    assert arabic.doc_metadata["author"] == "Ahmad Jaber T Algadeeb" and arabic.image.size == (1224, 1584)


def test_huge_pages(tmp_path):
    """A 200-inch PDF page renders within the pixel cap (boxes stay in points); an image over Pillow's
    decompression-bomb limit is a typed error, and Pillow's global limit is left alone."""
    doc = pymupdf.open()
    doc.new_page(width=14400, height=7200).insert_text((100, 100), "poster", fontsize=200)
    doc.save(tmp_path / "poster.pdf")
    (p,) = pages_of(tmp_path / "poster.pdf")
    assert (p.width, p.height) == (14400.0, 7200.0)
    assert p.image.width * p.image.height <= 40_000_000 and abs(p.image.width / p.image.height - 2) < 0.01
    limit = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(_encode(Image.new("1", (20000, 10000)), "PNG"))  # 200 MP, a few KB
    with pytest.raises(TooLargeError, match="bomb.png"):
        pages_of(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == limit
    lenient = pages_of([tmp_path / "bomb.png", tmp_path / "poster.pdf"], on_error="page", dpi=1)
    assert lenient[0].status == "error" and "TooLargeError" in lenient[0].error
