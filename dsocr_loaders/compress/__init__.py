"""Optical context compression: render text into pages, count vision vs text tokens, measure what a decoder
gives back (COMPRESSION.md). Rendering, counting and the metrics import no torch."""
from .count import CompressionStats, PageCount, compression_stats
from .fidelity import Fidelity, fidelity
from .render import DoesNotFitError, MissingGlyphError, RenderedPage, normalize, render_text_pages
from .roundtrip import PageDecode, decompress, join_decodes
from .study import StudyRow, StudyTable, compression_study

__all__ = ["CompressionStats", "DoesNotFitError", "Fidelity", "MissingGlyphError", "PageCount", "PageDecode",
           "RenderedPage", "StudyRow", "StudyTable", "compression_stats", "compression_study", "decompress",
           "fidelity", "join_decodes", "normalize", "render_text_pages"]
