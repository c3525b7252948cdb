"""Text -> square page images at a mode's own canvas, for optical context compression (COMPRESSION.md §4.1).

Deterministic (the same text, font and settings give byte-identical PNGs in one environment) and lossless:
the text is normalised once (NFC, line ends, tabs), and the pages partition it exactly — each page's `text` is
the slice it draws and `span` its offsets, so "".join(page.text) is the normalised text. Lines wrap greedily
at spaces (a word wider than a line is cut by characters). Glyph size is in model-input pixels, because one
vision token always covers 64x64 of them: that, not the canvas, sets the compression ratio. A code point the
font lacks is a MissingGlyphError listing them; text that cannot fit one page at `min_font_px` is a
DoesNotFitError; nothing is ever truncated silently. Imports neither torch nor the model.
"""
from __future__ import annotations

import hashlib
import io
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .geometry import MODES, canvas, paper_tokens

BUNDLED_FONT = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"
CHARS_PER_TOKEN = 4.33  # English prose in DeepSeek-OCR's tokenizer (Fox EN, COMPRESSION.md §4.1)
MAX_FONT_PX = 64.0


class MissingGlyphError(ValueError):
    def __init__(self, code_points: list[str], font: Path) -> None:
        shown = ", ".join(f"U+{ord(c):04X}" for c in code_points[:20])
        super().__init__(f"{font.name} has no glyph for {len(code_points)} code point(s): {shown}"
                         f"{' ...' if len(code_points) > 20 else ''}; pass font= a font that covers them "
                         f"(e.g. Noto Sans CJK for Chinese or Japanese)")
        self.code_points = code_points


class DoesNotFitError(ValueError):
    def __init__(self, needed_px: float, min_font_px: float) -> None:
        super().__init__(f"the text fits one page only below {needed_px:.2f} px glyphs, under min_font_px "
                         f"{min_font_px}: use fit='paginate' or a larger mode")
        self.needed_px = needed_px


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image  # RGB, black text on white, mode canvas x canvas
    text: str  # the exact slice of the normalised text drawn here
    span: tuple[int, int]  # its offsets into the normalised text
    mode: str
    font_px: float
    lines: int
    config_hash: str  # parameters, font file, Pillow and FreeType versions

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, "PNG", optimize=False)
        return buf.getvalue()


def normalize(text: str, keep_newlines: bool = True) -> str:
    """NFC, \\r\\n and \\r as \\n, tabs as four spaces; keep_newlines=False collapses all whitespace."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return " ".join(text.split()) if not keep_newlines else text


def missing_glyphs(text: str, font: ImageFont.FreeTypeFont) -> list[str]:
    """Code points that render as the font's .notdef box (FreeType maps absent ones to glyph 0)."""
    def shape(ch: str) -> tuple:
        mask = font.getmask(ch)
        return mask.size, Image.Image()._new(mask).tobytes()

    notdef = shape("\U0010fffd")  # a private-use code point no text font covers
    seen, missing = set(), []
    for ch in text:
        if ch in seen or ch.isspace() or unicodedata.category(ch).startswith("C"):
            continue
        seen.add(ch)
        if shape(ch) == notdef:
            missing.append(ch)
    return missing


def _layout(text: str, font: ImageFont.FreeTypeFont, width: float, rows: int,
            max_pages: int | None = None) -> list[tuple[int, int, int]]:
    """Pages as (start, end, line count): greedy wrap at spaces, explicit newlines kept, long words cut (the
    first `max_pages` only, when given)."""
    pages, lines, start, line_start, i, n = [], 0, 0, 0, 0, len(text)

    def fits(a: int, b: int) -> bool:
        return font.getlength(text[a:b].rstrip("\n")) <= width

    while i < n:
        if text[i] == "\n":  # a line ends here; the newline belongs to it
            i += 1
            lines, line_start = lines + 1, i
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            while j < n and text[j] == " ":  # trailing spaces stay with the word
                j += 1
            if fits(line_start, j):
                i = j
            elif i > line_start:  # the word starts the next line
                lines, line_start = lines + 1, i
            else:  # a word wider than the line: cut it by characters
                k = i + 1
                while k < j and fits(line_start, k + 1):
                    k += 1
                i = k
                lines, line_start = lines + 1, i
        if lines >= rows:  # the page is full
            pages.append((start, line_start, lines))
            start, lines = line_start, 0
            if max_pages is not None and len(pages) >= max_pages:
                return pages
    if start < n:
        pages.append((start, n, lines + (1 if line_start < n else 0)))
    return pages


def _config_hash(**params) -> str:
    font = Path(params["font"])
    h = hashlib.sha256(repr(sorted(params.items())).encode())
    h.update(hashlib.sha256(font.read_bytes()).digest())
    h.update(f"{Image.__version__}/{ImageFont.core.freetype2_version}".encode())
    return h.hexdigest()[:16]


def _geometry(mode: str, font_px: float, line_height: float, margin_px: int | None) -> tuple[int, int, float, int]:
    side = canvas(mode)
    margin = round(0.03 * side) if margin_px is None else margin_px
    rows = max(1, int((side - 2 * margin) // (font_px * line_height)))
    return side, margin, side - 2 * margin, rows


def _calibrate(text: str, font_path: Path, mode: str, target: float, line_height: float, margin_px: int | None,
               chars_per_token: float, min_px: float) -> float:
    """The glyph size whose full first page holds `target` text tokens per vision token (binary search)."""
    vision = paper_tokens(canvas(mode), canvas(mode), mode)
    sample = text * (1 + 40_000 // max(len(text), 1))  # enough text to fill a page at any size
    lo, hi = min_px, MAX_FONT_PX
    for _ in range(16):  # 58/2^16 px: far below what changes a line
        px = (lo + hi) / 2
        side, margin, width, rows = _geometry(mode, px, line_height, margin_px)
        start, end, _ = _layout(sample[:60_000], ImageFont.truetype(str(font_path), px), width, rows, 1)[0]
        ratio = (end - start) / chars_per_token / vision
        lo, hi = (px, hi) if ratio > target else (lo, px)
    return round((lo + hi) / 2, 2)


def render_text_pages(text: str, *, mode: str = "small", font: str | Path | None = None, font_px: float | None = None,
                      target_ratio: float | None = None, fit: str = "paginate", line_height: float = 1.2,
                      margin_px: int | None = None, keep_newlines: bool = True, min_font_px: float = 6.0,
                      tokenizer: Callable[[str], int] | None = None) -> list[RenderedPage]:
    """Render `text` into pages of `mode` (tiny/small/base/large/gundam). Give `font_px`, or `target_ratio`
    (text tokens per vision token; calibrated on this text with `tokenizer`, a `str -> int` token counter,
    default ~4.33 characters per DeepSeek token), or neither (12 px, ≈10x for English prose)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if fit not in ("paginate", "one_page"):
        raise ValueError("fit must be 'paginate' or 'one_page'")
    font_path = Path(font) if font is not None else BUNDLED_FONT
    text = normalize(text, keep_newlines)
    probe = ImageFont.truetype(str(font_path), 16)
    missing = missing_glyphs(text, probe)
    if missing:
        raise MissingGlyphError(missing, font_path)
    per_token = len(text) / tokenizer(text) if tokenizer and text else CHARS_PER_TOKEN
    if font_px is None and target_ratio is not None:
        font_px = _calibrate(text or " ", font_path, mode, target_ratio, line_height, margin_px, per_token, min_font_px)
    px = float(font_px or 12.0)
    if fit == "one_page":
        px = _fit_one_page(text, font_path, mode, px, line_height, margin_px, min_font_px)
    side, margin, width, rows = _geometry(mode, px, line_height, margin_px)
    face = ImageFont.truetype(str(font_path), px)
    config = _config_hash(font=str(font_path), mode=mode, px=px, line_height=line_height, margin=margin,
                          keep_newlines=keep_newlines)
    pages = []
    for start, end, lines in _layout(text, face, width, rows) or [(0, 0, 0)]:
        image = Image.new("RGB", (side, side), "white")
        draw = ImageDraw.Draw(image)
        y = margin
        for line in _lines(text[start:end], face, width):
            draw.text((margin, y), line, font=face, fill="black")
            y += px * line_height
        pages.append(RenderedPage(image, text[start:end], (start, end), mode, px, lines, config))
    return pages


def _lines(chunk: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """The lines `_layout` made of one page's slice: its wrap replayed one line at a time, for drawing."""
    out, i = [], 0
    while i < len(chunk):
        _, end, _ = _layout(chunk[i:], font, width, 1, 1)[0]
        out.append(chunk[i:i + end].rstrip("\n").rstrip(" "))
        i += end
    return out


def _fit_one_page(text: str, font_path: Path, mode: str, px: float, line_height: float, margin_px: int | None,
                  min_px: float) -> float:
    """The largest glyph size (<= px) at which the text is one page."""
    def pages_at(size: float) -> int:
        side, margin, width, rows = _geometry(mode, size, line_height, margin_px)
        return len(_layout(text, ImageFont.truetype(str(font_path), size), width, rows, 2))

    if pages_at(px) <= 1:
        return px
    lo, hi = min_px / 4, px
    for _ in range(16):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pages_at(mid) <= 1 else (lo, mid)
    if lo < min_px:
        raise DoesNotFitError(lo, min_px)
    return round(lo, 3) if pages_at(round(lo, 3)) <= 1 else lo
