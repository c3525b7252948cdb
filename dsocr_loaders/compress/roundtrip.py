"""Rendered pages back to text through the batched engine (COMPRESSION.md §4.3): one request per page in the
page's own mode, greedy with the model's n-gram guard, and a status per page — never a silently missing page."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..ocr.quality import repetition_score
from ..ocr.types import OCREngine, OCRRequest
from .render import CHARS_PER_TOKEN, RenderedPage

FREE_OCR = "<image>\nFree OCR."  # the paper's compression study reads pages without layout


@dataclass
class PageDecode:
    text: str
    status: str  # "ok" | "max_tokens" | "repetition" | "error"
    generated_tokens: int | None
    error: str | None = None


def decompress(pages: Sequence[RenderedPage], *, engine: OCREngine, prompt: str = FREE_OCR,
               max_new_tokens: int | None = None) -> list[PageDecode]:
    """Each page's decoded text, in page order. The token budget defaults to 1.5x the page's text tokens
    (estimated at ~4.33 characters a token) plus a margin."""
    futures = []
    for page in pages:
        budget = max_new_tokens or int(1.5 * len(page.text) / CHARS_PER_TOKEN) + 32
        try:
            futures.append(engine.submit(OCRRequest(page.image, prompt, page.mode, max_new_tokens=budget)))
        except Exception as e:  # a refusal up front fails this page only
            futures.append(e)
    out = []
    for future in futures:
        try:
            if isinstance(future, Exception):
                raise future
            r = future.result()
        except Exception as e:
            out.append(PageDecode("", "error", None, f"{type(e).__name__}: {e}"))
            continue
        text = r.text.replace("<｜end▁of▁sentence｜>", "")
        status = "max_tokens" if r.finish_reason == "length" else "ok"
        if repetition_score(text) >= 0.25:
            status = "repetition"
        out.append(PageDecode(text, status, r.text_tokens))
    return out


def join_decodes(decoded: Sequence[PageDecode]) -> str:
    """The decoded pages in order, joined by newlines (a failed page joins as empty text; see its status)."""
    return "\n".join(d.text for d in decoded)
