"""Typed results: one `PageResult` per page asked for (never dropped), holding grounded `Element`s."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .quality import Quality

Box = tuple[float, float, float, float]
NormBox = tuple[int, int, int, int]

STATUSES = ("ok", "truncated", "empty", "error")


@dataclass
class Element:
    """One grounded block: `<|ref|>label<|/ref|><|det|>[[x0, y0, x1, y1], ...]<|/det|>` and its content.

    `bbox_norm` is the model's box on the 0-999 grid; `bbox` the same box in page units (PDF points of
    the page as displayed, or image pixels), origin top-left. With several boxes, `bbox` encloses them
    all and `boxes`/`boxes_norm` keep each. Untagged text (before the first tag) has no box.
    """

    label: str
    text: str
    bbox: Box | None = None
    bbox_norm: NormBox | None = None
    boxes: list[Box] = field(default_factory=list)
    boxes_norm: list[NormBox] = field(default_factory=list)
    image: Any = None  # PIL crop of a figure (label "image") when the page image was at hand
    figure_id: str | None = None  # "{page}_{k}": the k-th figure of its page, named in its placeholder
    image_name: str | None = None  # where the crop was saved, as the markdown links it (None: not saved)

    def to_dict(self) -> dict[str, Any]:
        d = {"label": self.label, "text": self.text,
             "bbox": list(self.bbox) if self.bbox else None,
             "bbox_norm": list(self.bbox_norm) if self.bbox_norm else None}
        if len(self.boxes) > 1:
            d["boxes"] = [list(b) for b in self.boxes]
        if self.image_name:
            d["image_name"] = self.image_name
        return d


@dataclass
class PageResult:
    """The OCR of one page.

    status: "ok"; "truncated" (the token limit was hit before EOS: usually a repetition loop, output
    kept); "empty" (nothing recognised); "error" (see `error`; the rest of the document goes on).
    Numbers: `vision_tokens` image placeholders fed, `valid_vision_tokens` the official test_compress
    count, `text_tokens` tokens generated (EOS included), `compression` = text / valid vision tokens.
    """

    page: int  # 0-based
    markdown: str = ""
    raw_text: str = ""
    elements: list[Element] = field(default_factory=list)
    status: str = "ok"
    width: float | None = None  # None where unknown (a page that could not be rendered, a file that could not be read)
    height: float | None = None
    unit: str | None = "px"  # "pt" for PDF pages, "px" for images
    error: str | None = None  # "Type: message"
    error_type: str | None = None  # e.g. "PasswordError", "EngineError"
    source: str | None = None
    page_label: str | None = None
    total_pages: int | None = None
    finish_reason: str | None = None  # "eos" | "length" | None (unknown, e.g. text from elsewhere)
    vision_tokens: int | None = None
    valid_vision_tokens: int | None = None
    text_tokens: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    doc_metadata: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # task, mode, model: how this page was read
    quality: Quality | None = None  # signals and verdict (quality.py); None for a page that never ran

    @classmethod
    def file_error(cls, source: str, error: BaseException) -> "PageResult":
        """The one result of a file that could not be read: no page, size or token numbers it does not have."""
        return cls(page=0, status="error", error=f"{type(error).__name__}: {error}", error_type=type(error).__name__,
                   source=source, unit=None)

    @property
    def is_file_error(self) -> bool:
        """A whole file that could not be read (not one of its pages)."""
        return self.status == "error" and self.total_pages is None

    @property
    def compression(self) -> float | None:
        if not self.text_tokens or not self.valid_vision_tokens:
            return None
        return round(self.text_tokens / self.valid_vision_tokens, 2)

    @property
    def figures(self) -> list[Element]:
        return [e for e in self.elements if e.label == "image"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (figure crops are left out; see Element.image)."""
        return {
            "page": self.page, "page_label": self.page_label, "total_pages": self.total_pages,
            "source": self.source, "status": self.status, "error": self.error, "error_type": self.error_type,
            "finish_reason": self.finish_reason, "width": self.width, "height": self.height, "unit": self.unit,
            "markdown": self.markdown, "raw_text": self.raw_text,
            "elements": [e.to_dict() for e in self.elements],
            "vision_tokens": self.vision_tokens, "valid_vision_tokens": self.valid_vision_tokens,
            "text_tokens": self.text_tokens, "compression": self.compression,
            "timings": dict(self.timings), "doc_metadata": dict(self.doc_metadata), "settings": dict(self.settings),
            "quality": self.quality.to_dict() if self.quality else None,
        }
