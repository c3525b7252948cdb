"""PageResults -> flat, JSON-serializable metadata and stable ids: shared by the LangChain and LlamaIndex adapters.

Metadata follows LangChain's PDF loaders (`source`, `file_path`, `page` 0-based, `page_label`,
`total_pages`, PDF `creationdate`/`creator`/`producer`) plus namespaced `ocr_*` keys. Boxes are a JSON
string by default because vector stores such as Chroma reject nested metadata.
Ids hash the source's bytes, the page (and element), the OCR settings and the model, so re-ingesting an
unchanged file gives the same ids (LangChain `index()`, LlamaIndex docstore upserts) whatever its path.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .chunks import Chunk
from .quality import VERDICTS
from .quality import flat as flat_quality
from .results import Element, PageResult

PDF_KEYS = ("title", "author", "subject", "keywords", "creator", "producer", "creationdate", "moddate")


def content_hash(data: bytes | str | os.PathLike) -> str:
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray)):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stable_id(*parts: Any) -> str:
    """A UUID-formatted id derived from `parts` (LangChain asks for UUIDs; LlamaIndex takes any string)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def content_key(pipeline: Any, *extra: Any) -> tuple[str, ...]:
    """What besides the file and the page decides a Document's content, hence its id: the OCR settings, the
    model, the render dpi, the table format, and the adapter's own content options (`extra`)."""
    return (pipeline.settings.key(), pipeline.engine_identity, f"dpi={pipeline.render.dpi}",
            f"tables={pipeline.output.table_format}", *map(str, extra))


def page_metadata(r: PageResult, source: str) -> dict[str, Any]:
    if r.is_file_error:  # a file that could not be read has no page to name
        return {"source": source, "file_path": source}
    meta: dict[str, Any] = {"source": source, "file_path": source, "page": r.page, "page_label": r.page_label,
                            "total_pages": r.total_pages}
    meta.update({k: r.doc_metadata[k] for k in PDF_KEYS if r.doc_metadata.get(k) not in (None, "")})
    return meta


def ocr_metadata(r: PageResult, include_boxes: bool = True, nested: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "ocr_model": r.settings.get("model"), "ocr_mode": r.settings.get("mode"), "ocr_task": r.settings.get("task"),
        "ocr_status": r.status, "ocr_finish_reason": r.finish_reason, "ocr_vision_tokens": r.vision_tokens,
        "ocr_text_tokens": r.text_tokens, "page_width": r.width, "page_height": r.height, "page_unit": r.unit,
    }
    if r.error:
        meta["ocr_error"] = r.error
        meta["ocr_error_type"] = r.error_type
    if include_boxes:
        boxes = [e.to_dict() for e in r.elements if e.bbox is not None]
        meta["ocr_elements"] = boxes if nested else json.dumps(boxes, ensure_ascii=False)
    meta |= flat_quality(r.quality)
    return {k: v for k, v in meta.items() if v is not None}  # None values dropped: vector stores refuse them


def chunk_metadata(chunk: Chunk, pages: list[PageResult], include_boxes: bool = True,
                   nested: bool = False) -> dict[str, Any]:
    """A chunk's own metadata: heading path, pages (0-based), index, boxes, the page headers and footers left out of
    its text, and the worst quality verdict among its pages."""
    as_json = (lambda v: v) if nested else (lambda v: json.dumps(v, ensure_ascii=False))
    meta: dict[str, Any] = {"headings": as_json(chunk.headings), "pages": as_json(chunk.pages),
                            "chunk_index": chunk.index}
    if chunk.headers_footers:
        meta["headers_footers"] = as_json(chunk.headers_footers)
    if include_boxes:
        meta["ocr_blocks"] = as_json(chunk.blocks)
    verdicts = [r.quality.verdict for r in pages if r.page in chunk.pages and r.quality is not None]
    if verdicts:
        meta["ocr_quality_verdict"] = max(verdicts, key=VERDICTS.index)
    return meta


def element_metadata(e: Element, index: int, nested: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"category": e.label, "element_index": index}
    if e.bbox is not None:
        meta["bbox"] = list(e.bbox) if nested else json.dumps(list(e.bbox))
        meta["bbox_norm"] = list(e.bbox_norm) if nested else json.dumps(list(e.bbox_norm))
    if e.image_name:
        meta["image_name"] = e.image_name
    return meta


def single_status(results: Iterable[PageResult]) -> dict[str, Any]:
    """Status of a whole file: "ok", or "partial" with the pages that are not ok."""
    bad = [r.page for r in results if r.status != "ok"]
    return {"ocr_status": "partial" if bad else "ok", "ocr_pages_not_ok": json.dumps(bad)}


def save_figures(r: PageResult, folder: str | os.PathLike, stem: str, link_base: str | None = None) -> None:
    """Write figure crops as JPEG under `folder`, named per document (`{stem}_{page}_{k}.jpg`, so documents do
    not collide in one folder or index), and turn each saved figure's placeholder into a link: `link_base/name`
    (relative, e.g. beside the markdown file) or the file's path. The folder is made only when there is a crop."""
    from .grounding import figure_placeholder

    crops = [e for e in r.figures if e.image is not None and e.figure_id]
    if not crops:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    safe_stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "doc"
    for e in crops:
        path = out / f"{safe_stem}_{e.figure_id}.jpg"
        e.image.convert("RGB").save(path, "JPEG", quality=95)
        e.image_name = f"{link_base}/{path.name}" if link_base is not None else path.as_posix()
        r.markdown = r.markdown.replace(figure_placeholder(e.figure_id), f"![image]({e.image_name})")
