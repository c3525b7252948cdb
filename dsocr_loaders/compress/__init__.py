"""Optical context compression: render text into pages, count vision vs text tokens, measure what a decoder
gives back (COMPRESSION.md). Rendering, counting and the metrics import no torch. Names load on first use, so
importing the package (the CLI does, for its mode list) costs nothing and needs no Pillow."""
from __future__ import annotations

import importlib
from typing import Any

from .fidelity import Fidelity, fidelity  # stdlib only; imported now so `fidelity` names the function, not the module

_HOMES = {
    "CompressionStats": "count", "PageCount": "count", "compression_stats": "count",
    "DoesNotFitError": "render", "MissingGlyphError": "render", "RenderedPage": "render", "normalize": "render",
    "render_text_pages": "render",
    "PageDecode": "roundtrip", "decompress": "roundtrip", "join_decodes": "roundtrip",
    "StudyRow": "study", "StudyTable": "study", "compression_study": "study",
}
__all__ = ["CompressionStats", "DoesNotFitError", "Fidelity", "MissingGlyphError", "PageCount", "PageDecode",
           "RenderedPage", "StudyRow", "StudyTable", "compression_stats", "compression_study", "decompress",
           "fidelity", "join_decodes", "normalize", "render_text_pages"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
