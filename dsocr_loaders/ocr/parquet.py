"""A batch job's output as Parquet rows, and back: one flat row per PageResult (every field; nested ones as
JSON), keyed by the page id, with the file's content hash and the content key the job's ids were made from.
Reading needs only pyarrow (no Ray), so the loaders can read a job's output on any machine.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .results import Element, PageResult
from .quality import Quality

logger = logging.getLogger(__name__)
JSON_FIELDS = ("elements", "timings", "doc_metadata", "settings", "quality")


def result_row(r: PageResult, page_id: str, sha256: str, key: list[str], order: int = 0) -> dict[str, Any]:
    """A PageResult as one flat Parquet row: every field, nested ones as JSON."""
    d = r.to_dict()
    for k in JSON_FIELDS:
        d[k] = json.dumps(d[k], ensure_ascii=False, default=str)
    return {"page_id": page_id, "sha256": sha256, "content_key": json.dumps(key), "order": order, **d}


def page_result(row: dict[str, Any]) -> PageResult:
    """A Parquet row back into a PageResult (figure crops are not stored)."""
    elements = [Element(e["label"], e["text"], tuple(e["bbox"]) if e.get("bbox") else None,
                        tuple(e["bbox_norm"]) if e.get("bbox_norm") else None,
                        [tuple(b) for b in e.get("boxes") or []], image_name=e.get("image_name"))
                for e in json.loads(row["elements"] or "[]")]
    q = json.loads(row["quality"] or "null")
    quality = Quality(**{**q, "reasons": tuple(q.get("reasons") or ())}) if q else None
    fields = ("page", "markdown", "raw_text", "status", "width", "height", "unit", "error", "error_type", "source",
              "page_label", "total_pages", "finish_reason", "vision_tokens", "valid_vision_tokens", "text_tokens")
    values = {k: (None if _missing(row.get(k)) else row.get(k)) for k in fields}
    values["page"] = int(values["page"] or 0)
    return PageResult(**values, elements=elements, timings=json.loads(row["timings"] or "{}"),
                      doc_metadata=json.loads(row["doc_metadata"] or "{}"), settings=json.loads(row["settings"] or "{}"),
                      quality=quality)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _tables(output: str | Path, columns: list[str] | None = None) -> Iterator[Any]:
    """Each readable Parquet file of results under `output` (not under "_" or "." folders); a file a killed job
    left half-written is skipped (its pages are simply not done) and renamed aside, so the next run does not trip
    on it again."""
    import pyarrow.parquet as pq

    root = Path(output)
    for f in sorted(root.glob("**/*.parquet")) if root.exists() else []:
        if any(part.startswith(("_", ".")) for part in f.relative_to(root).parts):
            continue  # a job's bookkeeping (its manifest, Ray's checkpoint), not results
        try:
            yield pq.read_table(f, columns=columns)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a truncated file
            logger.warning("%s is not a complete Parquet file (a killed job?): %s; its pages will be done again", f, e)
            f.rename(f.with_suffix(".incomplete"))


def done_page_ids(output: str | Path) -> set[str]:
    """Page ids already written under `output` (the resume anti-join)."""
    return {pid for t in _tables(output, ["page_id"]) for pid in t.column("page_id").to_pylist()}


def read_results(output: str | Path) -> list[tuple[PageResult, str, list[str]]]:
    """(PageResult, file sha256, content key) for every row under `output`, in the order of the job's inputs and
    pages; a page written twice (a rerun without resume) counts once."""
    seen: dict[str, dict[str, Any]] = {}
    for table in _tables(output):
        for row in table.to_pylist():
            seen.setdefault(row["page_id"], row)
    rows = sorted(seen.values(), key=lambda r: (int(r.get("order") or 0), r["source"] or "", int(r["page"] or 0)))
    return [(page_result(r), r["sha256"], json.loads(r["content_key"] or "[]")) for r in rows]
