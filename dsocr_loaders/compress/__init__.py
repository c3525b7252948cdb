"""Optical context compression: render text into pages, count vision vs text tokens, measure what a decoder
gives back (COMPRESSION.md). Rendering, counting and the metrics import no torch."""
from .count import CompressionStats, PageCount, compression_stats
from .fidelity import Fidelity, fidelity
from .render import DoesNotFitError, MissingGlyphError, RenderedPage, normalize, render_text_pages

__all__ = ["CompressionStats", "DoesNotFitError", "Fidelity", "MissingGlyphError", "PageCount", "RenderedPage",
           "compression_stats", "fidelity", "normalize", "render_text_pages"]
