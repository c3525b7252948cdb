"""Sources -> documents -> page images, lazily: a 2,800-page PDF streams one page at a time.

A source is a path, a directory (files matching `glob`), bytes, a binary file object or a list of
these. The kind is sniffed from the bytes (`%PDF-` or what Pillow recognises), not from the suffix.
PDFs render with PyMuPDF at `dpi` (official: 144, i.e. zoom 2) with `/Rotate` and the CropBox applied,
so page units are points of the page as displayed (origin top-left). Images are pages in pixels after
EXIF orientation; every TIFF frame is a page, GIFs give their first frame.
"""
from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

from .errors import CorruptFileError, DsocrInputError, EmptyInputError, PageRangeError, PasswordError
from .images import MULTI_FRAME_FORMATS, open_image, to_rgb
from .settings import DEFAULT_DPI, DEFAULT_GLOB

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, BinaryIO, Iterable[Any]]
Pages = Union[None, str, int, Iterable[int]]
# The model sees at most a 1024/1280 global view plus <= 9 tiles; beyond this a render only costs memory.
MAX_RENDER_PIXELS = 40_000_000
SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


@dataclass
class PageImage:
    """One page, rendered: what the model sees plus where it came from."""

    image: Any  # PIL RGB image; None when rendering failed (see error)
    page: int  # 0-based index in its document
    page_label: str  # the PDF page label, else str(page + 1)
    total_pages: int
    width: float  # page size in `unit`
    height: float
    unit: str  # "pt" (PDF) | "px" (image)
    source: str
    rotation: int = 0  # PDF /Rotate applied while rendering
    doc_metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    render_s: float = 0.0


def parse_pages(pages: Pages, total: int, source: str = "") -> list[int]:
    """Selected 0-based page indices, ascending. A string counts from 1 ("1-3,7", "5-"); ints from 0."""
    if pages is None:
        return list(range(total))
    if isinstance(pages, str):
        chosen: set[int] = set()
        for part in filter(None, (p.strip() for p in pages.split(","))):
            m = re.fullmatch(r"(\d*)\s*-\s*(\d*)|(\d+)", part)
            if not m or part == "-":
                raise PageRangeError(f"bad page range {part!r} in {pages!r}: use e.g. '1-3,7' (1-based)")
            if m.group(3):
                lo = hi = int(m.group(3))
            else:
                lo, hi = int(m.group(1) or 1), int(m.group(2) or total)
            if lo < 1 or hi > total or lo > hi:
                raise PageRangeError(f"pages {part!r} outside 1-{total} of {source or 'the document'}")
            chosen.update(range(lo - 1, hi))
        return sorted(chosen)
    indices = [pages] if isinstance(pages, int) else list(pages)
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < total]
    if bad:
        raise PageRangeError(f"page indices {bad} outside 0-{total - 1} (0-based) of {source or 'the document'}")
    return sorted(set(indices))


def iter_inputs(source: Source, glob: str = DEFAULT_GLOB) -> Iterator[tuple[str, str | bytes]]:
    """(name, path or bytes) for every input in `source`, in a stable order."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield "<bytes>", bytes(source)
    elif hasattr(source, "read"):
        yield str(getattr(source, "name", "<stream>")), source.read()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.glob(glob) if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not files:
                logger.warning("no PDF or image files match %r under %s", glob, path)
            for p in files:
                yield str(p), str(p)
        elif path.exists():
            yield str(path), str(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    elif isinstance(source, Iterable):
        for item in source:
            yield from iter_inputs(item, glob)
    else:
        raise TypeError(f"unsupported source type {type(source).__name__}: give a path, bytes or a binary file")


def _head(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data[:1024]
    with open(data, "rb") as f:
        return f.read(1024)


def open_document(name: str, data: str | bytes, *, password: str | None = None,
                  dpi: float = DEFAULT_DPI) -> "PdfDocument | ImageDocument":
    """Sniff and open one input; typed errors for empty, corrupt, encrypted or unsupported data."""
    head = _head(data)
    if not head:
        raise EmptyInputError(f"{name} is empty (0 bytes)")
    if b"%PDF-" in head:
        return PdfDocument(name, data, password=password, dpi=dpi)
    return ImageDocument(name, data)


class PdfDocument:
    kind = "pdf"

    def __init__(self, name: str, data: str | bytes, *, password: str | None, dpi: float) -> None:
        import pymupdf

        self.name, self.dpi = name, dpi
        try:
            self.doc = pymupdf.open(data) if isinstance(data, str) else pymupdf.open(stream=data, filetype="pdf")
        except Exception as e:
            raise CorruptFileError(f"{name} is not a readable PDF: {e}") from e
        if self.doc.needs_pass:
            if password is None:
                raise PasswordError(f"{name} is encrypted: pass password=...")
            if not self.doc.authenticate(password):
                raise PasswordError(f"wrong password for {name}")
        self.total_pages = self.doc.page_count
        if self.total_pages == 0:
            if self.doc.is_repaired:
                raise CorruptFileError(f"{name} is damaged or truncated: no page could be read")
            raise EmptyInputError(f"{name} has no pages")
        self.metadata = pdf_metadata(self.doc.metadata or {})

    def pages(self, selection: list[int]) -> Iterator[PageImage]:
        import time

        import pymupdf
        from PIL import Image

        for i in selection:
            t0 = time.perf_counter()
            try:
                page = self.doc[i]
                label = page.get_label() or str(i + 1)
                rect, rotation = page.rect, page.rotation
                zoom = self.dpi / 72
                if rect.width * rect.height * zoom * zoom > MAX_RENDER_PIXELS:  # e.g. a 200-inch poster page
                    # 0.995: pixmap sizes round outward
                    zoom = 0.995 * (MAX_RENDER_PIXELS / (rect.width * rect.height)) ** 0.5
                    logger.info("%s page %d: rendered at %.0f dpi to stay under %d pixels", self.name, i,
                                zoom * 72, MAX_RENDER_PIXELS)
                pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
                image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
            except Exception as e:  # one broken page never stops the document
                logger.warning("%s page %d: %s", self.name, i, e)
                yield PageImage(None, i, str(i + 1), self.total_pages, 0.0, 0.0, "pt", self.name,
                                doc_metadata=self.metadata, error=f"render failed: {e}")
                continue
            yield PageImage(image, i, label, self.total_pages, round(rect.width, 2), round(rect.height, 2), "pt",
                            self.name, rotation,
                            self.metadata, render_s=time.perf_counter() - t0)

    def close(self) -> None:
        self.doc.close()


class ImageDocument:
    kind = "image"

    def __init__(self, name: str, data: str | bytes) -> None:
        self.name = name
        self.image = open_image(name, data if isinstance(data, str) else io.BytesIO(data))
        fmt = self.image.format or ""
        self.total_pages = getattr(self.image, "n_frames", 1) if fmt in MULTI_FRAME_FORMATS else 1
        self.metadata = {"format": fmt}

    def pages(self, selection: list[int]) -> Iterator[PageImage]:
        for i in selection:
            try:
                self.image.seek(i)
                rgb = to_rgb(self.image)
            except Exception as e:
                logger.warning("%s frame %d: %s", self.name, i, e)
                yield PageImage(None, i, str(i + 1), self.total_pages, 0.0, 0.0, "px", self.name,
                                doc_metadata=self.metadata, error=f"decode failed: {e}")
                continue
            yield PageImage(rgb, i, str(i + 1), self.total_pages, float(rgb.width), float(rgb.height), "px",
                            self.name, doc_metadata=self.metadata)

    def close(self) -> None:
        self.image.close()


def pdf_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """PDF info dict with lower-case keys and ISO dates, as LangChain's PDF parsers report it."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value in (None, ""):
            continue
        k = key.lower()
        out[k] = pdf_date(value) if k in ("creationdate", "moddate") else value
    return out


def pdf_date(value: str) -> str:
    """'D:20220809113013+02'00'' -> '2022-08-09T11:30:13+02:00' (unparseable values pass through)."""
    m = re.match(r"D:(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?([Zz+\-])?(\d{2})?'?(\d{2})?", value)
    if not m:
        return value
    y, mo, d, h, mi, s, sign, th, tm = m.groups()
    iso = f"{y}-{mo or '01'}-{d or '01'}T{h or '00'}:{mi or '00'}:{s or '00'}"
    if sign in ("Z", "z"):
        return iso + "+00:00"
    if sign:
        return f"{iso}{sign}{th or '00'}:{tm or '00'}"
    return iso


def iter_documents(source: Source, *, password: str | None = None, dpi: float = DEFAULT_DPI,
                   glob: str = DEFAULT_GLOB) -> Iterator[tuple[str, Any]]:
    """(name, opened document or the typed error it raised), one input at a time."""
    for name, data in iter_inputs(source, glob):
        try:
            yield name, open_document(name, data, password=password, dpi=dpi)
        except DsocrInputError as e:
            yield name, e


def count_pages(source: Source, pages: Pages = None, *, password: str | None = None, glob: str = DEFAULT_GLOB) -> int:
    """How many PageResults `OCRPipeline.run` yields for these arguments (a source that cannot be opened,
    or whose page selection does not fit, counts as its one error page): the total of a progress bar."""
    n = 0
    for name, doc in iter_documents(source, password=password, glob=glob):
        if isinstance(doc, DsocrInputError):
            n += 1
            continue
        try:
            n += len(parse_pages(pages, doc.total_pages, name))
        except DsocrInputError:
            n += 1
        finally:
            doc.close()
    return n


def render_pages(source: Source, pages: Pages = None, *, password: str | None = None, dpi: float = DEFAULT_DPI,
                 glob: str = DEFAULT_GLOB, on_error: str = "raise") -> Iterator[Any]:
    """Rendered PageImages of every selected page, lazily; needs no engine. A source that cannot be opened
    (or whose selection does not fit) raises its typed error, or with on_error="page" becomes one error
    PageResult naming the file, and the next source goes on."""
    from .results import PageResult

    for name, doc in iter_documents(source, password=password, dpi=dpi, glob=glob):
        try:
            if isinstance(doc, DsocrInputError):
                raise doc
            selection = parse_pages(pages, doc.total_pages, name)
        except DsocrInputError as e:
            if on_error == "raise":
                raise
            logger.warning("%s", e)
            yield PageResult(page=0, status="error", error=f"{type(e).__name__}: {e}", source=name)
            continue
        try:
            yield from doc.pages(selection)
        finally:
            doc.close()
