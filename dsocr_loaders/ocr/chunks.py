"""Heading-aware chunks: a document's grounded blocks merged into retrieval-sized pieces that keep their context.

Blocks are read in page order. A heading (the model's `title` / `sub_title`, or Unlimited-OCR's
`doc_title` / `paragraph_title`; its level from the markdown `#`s when written, else title 1, sub-title 2)
closes the chunk being built and updates the heading path. Other blocks join the current chunk while it stays
within `chunk_tokens`; a chunk never crosses a heading, may span pages, and lists every block's page and box.
Tables and formulas are never cut (one may exceed the budget alone); a long text block is cut at sentence
ends. Page headers and footers, as the model labels them, stay out of the text by default and are listed in
the chunk's `headers_footers`. Tokens are counted by a callable (default: words and punctuation marks, close to
a subword tokenizer's count for English text; pass the embedder's tokenizer for exact budgets).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .results import Element, PageResult
from .settings import DEFAULT_CHUNK_TOKENS

HEADINGS = {"title": 1, "doc_title": 1, "sub_title": 2, "paragraph_title": 2}
HEADERS_FOOTERS = {"header", "footer", "page_header", "page_footer", "page_number", "number", "header_image",
                   "footer_image"}
WHOLE = {"table", "equation", "formula", "interline_equation", "display_formula", "algorithm"}  # never cut
TOKEN = re.compile(r"\w+|[^\w\s]")
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n{2,}")
MARKDOWN_HEADING = re.compile(r"^\s*(#{1,6})\s*")


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


@dataclass
class Chunk:
    text: str  # the blocks' text, blank-line separated
    headings: list[str]  # the heading path, outermost first
    pages: list[int]  # 0-based pages it spans
    blocks: list[dict[str, Any]]  # every block: page, label, bbox (page units), bbox_norm (0-999)
    index: int = 0
    headers_footers: list[str] = field(default_factory=list)

    @property
    def contextualized(self) -> str:
        """The text to embed: the heading path, then the body (as docling's chunker contextualizes)."""
        return "\n".join(self.headings + [self.text]) if self.headings else self.text

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "headings": list(self.headings), "pages": list(self.pages),
                "blocks": list(self.blocks), "headers_footers": list(self.headers_footers)}


def heading_level(e: Element) -> int | None:
    """1 for a title, 2 for a sub-title, or the markdown `#` count the model wrote; None for other blocks."""
    if e.label not in HEADINGS:
        return None
    m = MARKDOWN_HEADING.match(e.text)
    return len(m.group(1)) if m else HEADINGS[e.label]


def _pieces(text: str, budget: int, counter: Callable[[str], int]) -> list[str]:
    """A long text cut at sentence ends into pieces within the budget (a sentence longer than it, at words)."""
    pieces, current = [], ""
    for sentence in (s for s in SENTENCE_END.split(text) if s and s.strip()):
        joined = f"{current} {sentence}".strip()
        if current and counter(joined) > budget:
            pieces.append(current)
            joined = sentence
        while counter(joined) > budget:  # one sentence alone is too long: cut it at words
            words = joined.split()
            cut = max(1, len(words) * budget // max(counter(joined), 1))
            pieces.append(" ".join(words[:cut]))
            joined = " ".join(words[cut:])
        current = joined
    if current.strip():
        pieces.append(current)
    return pieces


class _Builder:
    def __init__(self, budget: int, counter: Callable[[str], int]) -> None:
        self.budget, self.counter = budget, counter
        self.chunks: list[Chunk] = []
        self.path: list[str] = []
        self.texts: list[str] = []
        self.blocks: list[dict[str, Any]] = []
        self.pages: list[int] = []
        self.marginalia: list[str] = []
        self.tokens = 0

    def block(self, page: int, e: Element) -> dict[str, Any]:
        if page not in self.pages:
            self.pages.append(page)
        return {"page": page, "label": e.label, "bbox": list(e.bbox) if e.bbox else None,
                "bbox_norm": list(e.bbox_norm) if e.bbox_norm else None}

    def flush(self, last: bool = False) -> None:
        if self.texts:
            self.chunks.append(Chunk("\n\n".join(self.texts), list(self.path), sorted(self.pages), self.blocks,
                                     len(self.chunks), self.marginalia))
            self.marginalia = []
        elif self.blocks and self.chunks:  # boxes without text (a lone figure, a heading at the very end)
            self.chunks[-1].blocks.extend(self.blocks)
        if last and self.marginalia and self.chunks:  # headers/footers after the last text go with it
            self.chunks[-1].headers_footers.extend(self.marginalia)
        # headers and footers met before any text wait for the next chunk
        self.texts, self.blocks, self.pages, self.tokens = [], [], [], 0

    def heading(self, page: int, e: Element, level: int) -> None:
        self.flush()
        title = MARKDOWN_HEADING.sub("", e.text).strip()
        self.path = self.path[:level - 1] + [title]
        self.blocks.append(self.block(page, e))

    def add(self, page: int, e: Element, text: str) -> None:
        n = self.counter(text)
        if self.texts and self.tokens + n > self.budget:
            self.flush()
        self.texts.append(text)
        self.tokens += n
        self.blocks.append(self.block(page, e))


def chunk_pages(results: Iterable[PageResult], *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                drop_headers_footers: bool = True, token_counter: Callable[[str], int] | None = None) -> list[Chunk]:
    """The chunks of one document's pages (in page order; failed pages contribute nothing)."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be >= 1")
    b = _Builder(chunk_tokens, token_counter or count_tokens)
    for r in results:
        if r.status == "error":
            continue
        elements = r.elements or ([Element("text", r.markdown)] if r.markdown.strip() else [])
        for e in elements:
            text = e.text.strip()
            if e.label in HEADERS_FOOTERS and drop_headers_footers:
                if text:
                    b.marginalia.append(text)
                continue
            level = heading_level(e)
            if level is not None and text:
                b.heading(r.page, e, level)
            elif not text:
                b.blocks.append(b.block(r.page, e))
            elif e.label in WHOLE or b.counter(text) <= chunk_tokens:
                b.add(r.page, e, text)
            else:
                for piece in _pieces(text, chunk_tokens, b.counter):
                    b.add(r.page, e, piece)
    b.flush(last=True)
    return b.chunks
