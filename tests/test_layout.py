"""`dsocr convert --layout`: the boxes are drawn where the model put them, on PDFs (rotated, cropped) and images.

The model's answer comes from a real chat-completions server on 127.0.0.1 that reports each page's
square, so the whole path (render, request, parse, map to points, draw) is the one users run.
"""
from __future__ import annotations

import numpy as np
import pymupdf
import pytest
from PIL import Image, ImageDraw

from chat_server import ChatServer, ok, request_image
from dsocr_loaders.apps.cli import main
from dsocr_loaders.apps.layout import label_colour

RED = np.array([round(c * 255) for c in label_colour("title")])


def square_answer(body: dict, n: int):
    """Find the black square in the page image and answer with its box on the 0-999 grid."""
    img = np.asarray(request_image(body).convert("L"))
    ys, xs = np.nonzero(img < 60)
    h, w = img.shape
    box = [round(xs.min() / w * 999), round(ys.min() / h * 999), round(xs.max() / w * 999), round(ys.max() / h * 999)]
    return ok(f"<|ref|>title<|/ref|><|det|>[{box}]<|/det|>\n# Square")


def red_box(page: pymupdf.Page, above: float) -> tuple[tuple[int, int, int, int], int]:
    """(bbox of box-coloured pixels at or below row `above`, count of them above it: the label)."""
    pix = page.get_pixmap(dpi=144)  # 2 px per point: thin glyphs keep their colour
    a = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, pix.n)[..., :3].astype(int)
    ys, xs = np.nonzero(np.abs(a - RED).sum(-1) < 120)
    xs, ys = xs / 2, ys / 2
    below = ys >= above
    return (xs[below].min(), ys[below].min(), xs[below].max(), ys[below].max()), int((~below).sum())


def rotated_pdf(path, squares: list[tuple[float, float, float, float]], rotation: int = 90) -> list[tuple]:
    """One page per square (drawn unrotated, CropBox-relative): 500x400 pt MediaBox, CropBox offset by
    (50, 40), then turned. Returns each square where it is displayed, in points."""
    doc = pymupdf.open()
    shown = []
    for sq in squares:
        page = doc.new_page(width=500, height=400)
        page.set_cropbox(pymupdf.Rect(50, 40, 450, 350))
        page.draw_rect(pymupdf.Rect(sq), color=(0, 0, 0), fill=(0, 0, 0))
        page.set_rotation(rotation)
        shown.append(tuple(pymupdf.Rect(sq) * page.rotation_matrix))
    doc.save(path)
    return shown


@pytest.mark.parametrize("rotation", [90, 270, 0])
def test_layout_pdf_boxes_land_on_the_page_content(tmp_path, rotation):
    shown = rotated_pdf(tmp_path / "turned.pdf", [(40, 60, 140, 200), (150, 150, 280, 300), (10, 10, 60, 40)],
                        rotation)
    img = Image.new("RGB", (640, 480), "white")
    ImageDraw.Draw(img).rectangle((300, 100, 500, 300), fill="black")
    img.save(tmp_path / "photo.png")
    out = tmp_path / "out"
    with ChatServer(square_answer) as server:
        opts = ["--engine", "openai", "--base-url", server.url, "--layout", "--no-cache", "-q", "-o", str(out)]
        assert main(["convert", str(tmp_path / "turned.pdf"), "--pages", "1,3", *opts]) == 0
        assert main(["convert", str(tmp_path / "photo.png"), *opts]) == 0
    with pymupdf.open(out / "turned_layouts.pdf") as layout:
        assert layout.page_count == 2  # pages 1 and 3, as asked
        for page, sq in zip(layout, [shown[0], shown[2]]):
            assert page.rotation == rotation
            box, label_pixels = red_box(page, above=sq[1] - 1)
            assert box == pytest.approx(sq, abs=2.5), (box, sq)
            assert label_pixels > 5  # the label sits above the box
            assert "title" in page.get_text()
    with pymupdf.open(out / "photo_layouts.pdf") as layout:
        (page,) = layout
        assert (page.rect.width, page.rect.height) == (640, 480)
        box, _ = red_box(page, above=99)
        assert box == pytest.approx((300, 100, 500, 300), abs=2.5)


def test_layout_of_a_failed_page_is_drawn_plain_and_unreadable_sources_are_skipped(tmp_path):
    rotated_pdf(tmp_path / "turned.pdf", [(40, 60, 140, 200)])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00junk" * 40)
    with ChatServer(lambda body, n: ("json", 500, {"error": {"message": "down"}}, {})) as server:
        code = main(["convert", str(tmp_path / "turned.pdf"), str(tmp_path / "broken.pdf"), "-o", str(tmp_path / "o"),
                     "--engine", "openai", "--base-url", server.url, "--layout", "--no-cache", "-q"])
    assert code == 1
    with pymupdf.open(tmp_path / "o" / "turned_layouts.pdf") as layout:
        assert layout.page_count == 1 and "title" not in layout[0].get_text()
    assert not (tmp_path / "o" / "broken_layouts.pdf").exists()


def test_a_layout_that_cannot_be_written_fails_alone(tmp_path, capsys):
    """The layout PDF's path is taken by a folder: a warning, exit code 1, and the markdown of every input."""
    for name in ("a", "b"):
        rotated_pdf(tmp_path / f"{name}.pdf", [(40, 60, 140, 200)])
    out = tmp_path / "out"
    (out / "a_layouts.pdf").mkdir(parents=True)
    (out / "a_layouts.pdf" / "keep").write_text("x")  # not empty: PyMuPDF would replace an empty folder
    with ChatServer(square_answer) as server:
        code = main(["convert", str(tmp_path / "a.pdf"), str(tmp_path / "b.pdf"), "-o", str(out), "--engine", "openai",
                     "--base-url", server.url, "--layout", "--no-cache", "-q"])
    assert code == 1 and "1 layout PDFs could not be written" in capsys.readouterr().out
    assert (out / "a.md").read_text() == "# Square" and (out / "b.md").exists()
    assert (out / "b_layouts.pdf").is_file()
