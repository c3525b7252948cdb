"""One input -> an opened document: PDFs through PyMuPDF, images through Pillow; typed errors otherwise.

The kind is sniffed from the bytes (`%PDF-` or what Pillow recognises), not from the suffix; data that is
neither but that PyMuPDF still opens as a PDF (a header lost to a bad download) is read as a PDF with a
warning. PDFs render at `dpi` (official: 144, i.e. zoom 2) with `/Rotate` and the CropBox applied, so page
units are points of the page as displayed (origin top-left). Passwords are tried as given, then
SASLprep-normalised (RFC 4013), as AES-256 PDFs (revision 6) require. A PDF that PyMuPDF had to repair is
read, with a warning and `pdf_repaired` in the page metadata. Warnings count pages from 1.
"""
from __future__ import annotations

import io
import logging
import re
import stringprep
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptFileError, DsocrInputError, EmptyInputError, PasswordError, UnsupportedFormatError
from .images import MULTI_FRAME_FORMATS, open_image, to_rgb
from .settings import DEFAULT_DPI, PASSWORD_HINT

logger = logging.getLogger(__name__)

# The model sees at most a 1024/1280 global view plus <= 9 tiles; beyond this a render only costs memory.
MAX_RENDER_PIXELS = 40_000_000


@dataclass
class PageImage:
    """One page, rendered: what the model sees plus where it came from."""

    image: Any  # PIL RGB image; None when rendering failed (see error)
    page: int  # 0-based index in its document
    page_label: str  # the PDF page label, else str(page + 1)
    total_pages: int
    width: float | None  # page size in `unit`; None when the page could not be rendered
    height: float | None
    unit: str  # "pt" (PDF) | "px" (image)
    source: str
    rotation: int = 0  # PDF /Rotate applied while rendering
    doc_metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    render_s: float = 0.0
    text_layer: str | None = None  # a PDF page's own text (None for images): the quality signals' witness


def _text_layer(page) -> str | None:
    """The page's extracted text, or None where there is none or it cannot be read (never fails a page)."""
    try:
        text = page.get_text("text")
    except Exception as e:  # a broken content stream still renders
        logger.debug("no text layer: %s", e)
        return None
    return text if text.strip() else None


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep (stringprep profile), which PDF 2.0 applies to AES-256 passwords."""
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    out = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
                  stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
                  stringprep.in_table_c9)
    if any(check(c) for c in out for check in prohibited):
        raise ValueError("the password holds characters SASLprep prohibits")
    return out


def _head(data: str | bytes) -> bytes:
    if isinstance(data, bytes):
        return data[:1024]
    with open(data, "rb") as f:
        return f.read(1024)


def open_document(name: str, data: str | bytes, *, password: str | None = None, dpi: float = DEFAULT_DPI,
                  password_hint: str = PASSWORD_HINT, warn: bool = True) -> "PdfDocument | ImageDocument":
    """Sniff and open one input; typed errors for empty, corrupt, encrypted or unsupported data.
    `password_hint` names the option of the caller's surface in the error (the CLI: "--password")."""
    head = _head(data)
    if not head:
        raise EmptyInputError(f"{name} is empty (0 bytes)")
    if b"%PDF-" in head:
        return PdfDocument(name, data, password=password, dpi=dpi, password_hint=password_hint, warn=warn)
    try:
        return ImageDocument(name, data)
    except UnsupportedFormatError as unsupported:
        try:  # PyMuPDF reads PDFs whose header is lost (a truncated start, bytes before %PDF)
            doc = PdfDocument(name, data, password=password, dpi=dpi, password_hint=password_hint, warn=warn)
        except DsocrInputError:
            raise unsupported from None
        if warn:
            logger.warning("%s has no %%PDF header; PyMuPDF opened it as a PDF", name)
        return doc


class PdfDocument:
    kind = "pdf"

    def __init__(self, name: str, data: str | bytes, *, password: str | None, dpi: float,
                 password_hint: str = PASSWORD_HINT, warn: bool = True) -> None:
        import pymupdf

        self.name, self.dpi = name, dpi
        try:
            self.doc = pymupdf.open(data, filetype="pdf") if isinstance(data, str) else \
                pymupdf.open(stream=data, filetype="pdf")
        except Exception as e:
            raise CorruptFileError(f"{name} is not a readable PDF: {e}") from e
        if self.doc.needs_pass:
            if password is None:
                raise PasswordError(f"{name} is encrypted: give its password with {password_hint}")
            if not (self.doc.authenticate(password) or self._authenticate_saslprep(password)):
                raise PasswordError(f"wrong password for {name} (given with {password_hint})")
        self.total_pages = self.doc.page_count
        if self.total_pages == 0:
            if self.doc.is_repaired:
                raise CorruptFileError(f"{name} is damaged or truncated: no page could be read")
            raise EmptyInputError(f"{name} has no pages")
        self.metadata = pdf_metadata(self.doc.metadata or {})
        if self.doc.is_repaired:  # PyMuPDF rebuilt a broken cross-reference table: pages may be missing
            if warn:
                logger.warning("%s is damaged; PyMuPDF repaired it, check its %d pages", name, self.total_pages)
            self.metadata["pdf_repaired"] = True

    def _authenticate_saslprep(self, password: str) -> bool:
        try:
            prepared = saslprep(password)
        except ValueError:
            return False
        return prepared != password and bool(self.doc.authenticate(prepared))

    def pages(self, selection: list[int]) -> Iterator[PageImage]:
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
                    logger.info("%s page %d: rendered at %.0f dpi to stay under %d pixels", self.name, i + 1,
                                zoom * 72, MAX_RENDER_PIXELS)
                pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
                image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
                text_layer = _text_layer(page)
            except Exception as e:  # one broken page never stops the document
                logger.warning("%s page %d: render failed: %s", self.name, i + 1, e)
                yield PageImage(None, i, str(i + 1), self.total_pages, None, None, "pt", self.name,
                                doc_metadata=self.metadata, error=f"render failed: {e}")
                continue
            yield PageImage(image, i, label, self.total_pages, round(rect.width, 2), round(rect.height, 2), "pt",
                            self.name, rotation, self.metadata, render_s=time.perf_counter() - t0,
                            text_layer=text_layer)

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
                logger.warning("%s frame %d: decode failed: %s", self.name, i + 1, e)
                yield PageImage(None, i, str(i + 1), self.total_pages, None, None, "px", self.name,
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
