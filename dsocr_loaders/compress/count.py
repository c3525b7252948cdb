"""How many tokens a text takes as text and as rendered pages (COMPRESSION.md §1.2, §4.2).

Text tokens come from a tokenizer: any `str -> int` callable, or an object with `encode` (the DeepSeek-OCR
tokenizer, the paper's choice; tiktoken-style encoders work too). Vision tokens three ways: "paper" (what the
paper counts: 64 / 100 / 256 / 400 per Tiny / Small / Base / Large page, 256 + 100 per tile in Gundam), "valid"
(the official `test_compress` formula, padding discounted) and "decoder" (every position the decoder reads,
newlines and separator included: 73 / 111 / 273 / 421). All come from the model spec's own geometry.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsocr_model.family.deepseek_ocr import DEEPSEEK_OCR
from dsocr_model.family.spec import ModelSpec

from .geometry import paper_tokens
from .render import RenderedPage

COUNTS = ("paper", "valid", "decoder")


@dataclass
class PageCount:
    text_tokens: int
    vision_tokens: int  # as the paper counts
    vision_tokens_valid: int
    decoder_positions: int


@dataclass
class CompressionStats:
    text_tokens: int
    vision_tokens: int
    vision_tokens_valid: int
    decoder_positions: int
    count: str
    per_page: list[PageCount] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Text tokens per vision token, by the chosen count."""
        denominator = {"paper": self.vision_tokens, "valid": self.vision_tokens_valid,
                       "decoder": self.decoder_positions}[self.count]
        return self.text_tokens / denominator if denominator else 0.0


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    if callable(tokenizer) and not hasattr(tokenizer, "encode"):
        return tokenizer
    if hasattr(tokenizer, "encode"):
        def count(text: str) -> int:
            try:
                return len(tokenizer.encode(text, add_special_tokens=False))
            except TypeError:  # encoders without that keyword (tiktoken)
                return len(tokenizer.encode(text))
        return count
    raise TypeError("tokenizer must be a str -> int callable or have encode()")


def page_tokens(page: RenderedPage, spec: ModelSpec = DEEPSEEK_OCR) -> tuple[int, int, int]:
    """(paper, valid, decoder) vision tokens of one rendered page, from the spec's own tiling."""
    w, h = page.image.size
    return (paper_tokens(w, h, page.mode, spec), spec.valid_vision_tokens(w, h, page.mode),
            spec.image_token_count(w, h, page.mode))


def compression_stats(text: str, pages: Sequence[RenderedPage], tokenizer: Any = None, count: str = "paper",
                      spec: ModelSpec = DEEPSEEK_OCR) -> CompressionStats:
    """Per page and total: the text's tokens against its pages' vision tokens. `tokenizer` None loads the
    model's tokenizer from a local checkpoint named by $DSOCR_MODEL (no download in here)."""
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}")
    counter = token_counter(tokenizer if tokenizer is not None else _model_tokenizer())
    per_page = [PageCount(counter(p.text), *page_tokens(p, spec)) for p in pages]
    return CompressionStats(counter(text), sum(p.vision_tokens for p in per_page),
                            sum(p.vision_tokens_valid for p in per_page), sum(p.decoder_positions for p in per_page),
                            count, per_page)


def _model_tokenizer():
    from dsocr_model.modeling.tokenizer import load_tokenizer

    from ..ocr.settings import default_model

    try:
        return load_tokenizer(default_model())
    except OSError as e:
        raise ValueError(f"no tokenizer at hand ({e}): pass tokenizer= (a str -> int counter, or the model's "
                         f"tokenizer) or set $DSOCR_MODEL to a local checkpoint folder") from e
