"""Layout view: where the boxes landed, as the official `<name>_layouts.pdf` shows it.

One PDF per document with every processed page and each grounded element drawn on it: a tinted box in
its label's colour with the label above it. For a PDF input the original pages are copied and the boxes
drawn as vectors on top, so the text stays sharp and selectable; an image input becomes a page of its own
size (1 px = 1 pt). Boxes are PageResult.bbox in the page as displayed; `* page.derotation_matrix` takes
them to PyMuPDF's unrotated page space, where they are drawn.
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from ..ocr.errors import DsocrInputError
from ..ocr.results import PageResult
from ..ocr.sources import open_document

logger = logging.getLogger(__name__)
COLOURS = {  # RGB 0..1, one per common label; others get a stable colour from their name
    "title": (0.85, 0.1, 0.1), "sub_title": (0.9, 0.4, 0.0), "text": (0.1, 0.35, 0.85),
    "table": (0.0, 0.6, 0.3), "table_caption": (0.3, 0.65, 0.3), "image": (0.75, 0.2, 0.75),
    "figure": (0.75, 0.2, 0.75), "image_caption": (0.55, 0.3, 0.7), "figure_caption": (0.55, 0.3, 0.7),
    "equation": (0.6, 0.45, 0.0), "header": (0.45, 0.45, 0.45), "footer": (0.45, 0.45, 0.45),
}


def label_colour(label: str) -> tuple[float, float, float]:
    if label in COLOURS:
        return COLOURS[label]
    h = hashlib.md5(label.encode()).digest()
    return tuple(0.15 + 0.6 * b / 255 for b in h[:3])  # never too pale to see on white


def draw_elements(page, result: PageResult) -> int:
    """Draw `result`'s boxes on a PyMuPDF page whose displayed size is the result's page size."""
    import pymupdf

    rotation, derotate = page.rotation, page.derotation_matrix
    # PyMuPDF's drawing misses the CropBox offset on a rotated page, so draw unrotated and turn it back:
    # the boxes then land on the content for /Rotate 0/90/180/270 with any CropBox origin (tests/test_layout).
    page.set_rotation(0)
    drawn = 0
    for e in result.elements:
        for box in e.boxes or ([e.bbox] if e.bbox else []):
            colour = label_colour(e.label)
            page.draw_rect(pymupdf.Rect(box) * derotate, color=colour, fill=colour, fill_opacity=0.12, width=1.2)
            at = pymupdf.Point(box[0], max(box[1] - 2, 7)) * derotate  # just above the box, as displayed
            page.insert_text(at, e.label, fontsize=7, color=colour, rotate=rotation)
            drawn += 1
    page.set_rotation(rotation)
    return drawn


def write_layout_pdf(results: Sequence[PageResult], out_path: str | Path, *, password: str | None = None) -> Path | None:
    """Write `out_path` for one document's results (all from the same source). Returns None when the source
    cannot be opened again (its pages are error pages with nothing to draw)."""
    import pymupdf

    pages = list(results)  # failed pages too, drawn plain: the layout mirrors what was asked for
    if not pages:
        return None
    source = pages[0].source
    try:
        doc = open_document(source, source, password=password)  # a path: reopened, never held meanwhile
    except (DsocrInputError, OSError) as e:
        logger.warning("layout for %s skipped: %s", source, e)
        return None
    out = pymupdf.open()
    try:
        for r in pages:
            if doc.kind == "pdf":
                out.insert_pdf(doc.doc, from_page=r.page, to_page=r.page)
                page = out[-1]
            else:
                (img,) = doc.pages([r.page])  # decoded again: results do not keep page images
                if img.image is None:
                    continue
                page = out.new_page(width=img.width, height=img.height)
                buf = io.BytesIO()
                img.image.save(buf, format="PNG")
                page.insert_image(page.rect, stream=buf.getvalue())
            draw_elements(page, r)
        if out.page_count == 0:
            return None
        out_path = Path(out_path)
        out.save(out_path, garbage=3, deflate=True)
        return out_path
    finally:
        out.close()
        doc.close()
