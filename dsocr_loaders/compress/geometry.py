"""Page geometry from the model spec, shared by rendering and counting: the canvas each mode's pages are drawn
at, and the vision tokens the paper counts for a page (64 / 100 / 256 / 400; Gundam 256 + 100 per tile)."""
from __future__ import annotations

from dsocr_model.family.deepseek_ocr import DEEPSEEK_OCR
from dsocr_model.family.spec import ModelSpec

MODES = ("tiny", "small", "base", "large", "gundam")


def canvas(mode: str, spec: ModelSpec = DEEPSEEK_OCR) -> int:
    """The square page side of `mode`: its one view, or for a tiling mode 2x2 tiles (Gundam: 1280)."""
    m = spec.mode(mode)
    return 2 * m.image_size if m.crop_mode else m.image_size


def paper_tokens(width: int, height: int, mode: str, spec: ModelSpec = DEEPSEEK_OCR) -> int:
    """Vision tokens as the paper counts them (no newlines or separator), from the spec's own tiling."""
    m = spec.mode(mode)
    if not m.crop_mode:
        return spec.side_tokens(m.image_size) ** 2
    cols, rows = spec.view_grid(width, height, mode)
    tiles = cols * rows if cols * rows > 1 else 0
    return spec.side_tokens(m.base_size) ** 2 + spec.side_tokens(m.image_size) ** 2 * tiles
