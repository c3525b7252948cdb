"""Sources -> documents -> page images, lazily: a 2,800-page PDF streams one page at a time.

A source is a path, a directory (files matching `glob`), bytes, a binary file object or a list of
these. The kind is sniffed from the bytes (`%PDF-` or what Pillow recognises), not from the suffix.
PDFs render with PyMuPDF at `dpi` (official: 144, i.e. zoom 2) with `/Rotate` and the CropBox applied,
so page units are points of the page as displayed (origin top-left). Images are pages in pixels after
EXIF orientation; every TIFF frame is a page, GIFs give their first frame.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Union

from .errors import DsocrInputError, PageRangeError
from .formats import PageImage, open_document, pdf_date, pdf_metadata  # noqa: F401  (re-exported)
from .results import PageResult
from .settings import DEFAULT_DPI, DEFAULT_GLOB, PASSWORD_HINT

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, BinaryIO, Iterable[Any]]
Pages = Union[None, str, int, Iterable[int]]
SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def parse_pages(pages: Pages, total: int, source: str = "", *, clip: bool = False) -> list[int]:
    """Selected 0-based page indices, ascending. A string counts from 1 ("1-3,7", "5-"); ints from 0.
    `clip`: keep the selected pages the document has (one selection over many documents) instead of raising."""
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
            if clip and lo >= 1:
                hi = min(hi, total)
            if lo < 1 or hi > total or lo > hi:
                if clip and lo >= 1:
                    continue
                raise PageRangeError(f"pages {part!r} outside 1-{total} of {source or 'the document'}")
            chosen.update(range(lo - 1, hi))
        return sorted(chosen)
    indices = [pages] if isinstance(pages, int) else list(pages)
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < total]
    if bad and not (clip and all(isinstance(i, int) and i >= 0 for i in bad)):
        raise PageRangeError(f"page indices {bad} outside 0-{total - 1} (0-based) of {source or 'the document'}")
    return sorted(set(indices) - set(bad))


def several_inputs(source: Source) -> bool:
    """A folder or a list of inputs (the error policy's default then reports and goes on)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).is_dir()
    return not isinstance(source, (bytes, bytearray, memoryview)) and not hasattr(source, "read")


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


def iter_documents(source: Source, *, password: str | None = None, dpi: float = DEFAULT_DPI,
                   glob: str = DEFAULT_GLOB, name: str | None = None,
                   password_hint: str = PASSWORD_HINT, warn: bool = True) -> Iterator[tuple[str, Any]]:
    """(name, opened document or the typed error it raised), one input at a time. `name` names a single
    bytes or stream source (GenericLoader's blob path) instead of "<bytes>"."""
    for found, data in iter_inputs(source, glob):
        found = name if name is not None and found in ("<bytes>", "<stream>") else found
        try:
            yield found, open_document(found, data, password=password, dpi=dpi, password_hint=password_hint,
                                       warn=warn)
        except DsocrInputError as e:
            yield found, e


def count_pages(source: Source, pages: Pages = None, *, password: str | None = None, glob: str = DEFAULT_GLOB,
                on_error: str | None = None) -> int:
    """How many PageResults `OCRPipeline.run` yields for these arguments: the total of a progress bar."""
    policy = resolve_on_error(on_error, source)
    n = 0
    for name, doc in iter_documents(source, password=password, glob=glob, warn=False):  # the run warns
        if isinstance(doc, DsocrInputError):
            n += policy != "skip"
            continue
        try:
            n += len(parse_pages(pages, doc.total_pages, name, clip=several_inputs(source)))
        except DsocrInputError:
            n += policy != "skip"
        finally:
            doc.close()
    return n


def resolve_on_error(on_error: str | None, source: Source) -> str:
    """None: "raise" for one input, "page" (report the file and go on) for a folder or a list."""
    return on_error or ("page" if several_inputs(source) else "raise")


def render_pages(source: Source, pages: Pages = None, *, password: str | None = None, dpi: float = DEFAULT_DPI,
                 glob: str = DEFAULT_GLOB, on_error: str | None = None, name: str | None = None,
                 password_hint: str = PASSWORD_HINT, several: bool | None = None) -> Iterator[Any]:
    """Rendered PageImages of every selected page, lazily; needs no engine.

    A source that cannot be opened (or whose selection does not fit) raises its typed error
    (on_error="raise"), becomes one error PageResult naming the file, the error type and the message
    ("page"), or is logged and left out ("skip"); None is "raise" for one input and "page" for several.
    Over several inputs a page selection keeps, per document, the pages it has; a document with none of
    them is reported and skipped. `several` overrides whether `source` counts as several inputs (an adapter
    that runs a folder's files one call at a time)."""
    multi = several_inputs(source) if several is None else several
    policy = on_error or ("page" if multi else "raise")
    for found, doc in iter_documents(source, password=password, dpi=dpi, glob=glob, name=name,
                                     password_hint=password_hint):
        try:
            if isinstance(doc, DsocrInputError):
                raise doc
            selection = parse_pages(pages, doc.total_pages, found, clip=multi)
        except DsocrInputError as e:
            if policy == "raise":
                raise
            logger.warning("%s: %s", "skipped" if policy == "skip" else "failed", e)
            if policy == "page":
                yield PageResult.file_error(found, e)
            continue
        try:
            if not selection:
                logger.warning("%s has none of the pages %s (%d pages): skipped", found, pages, doc.total_pages)
            yield from doc.pages(selection)
        finally:
            doc.close()
