"""Raw model text -> PageResult: grounded elements with boxes, clean markdown, a status.

The grounding format (ARCHITECTURE.md §8.1) puts a tag pair before each block's content:
`<|ref|>label<|/ref|><|det|>[[x0, y0, x1, y1], ...]<|/det|>` with integer boxes on a 0-999 grid over
the page image (pixels = v / 999 * size, as the official scripts draw them; docling divides by 1000).
Servers that skip special tokens leave `label[[x0, y0, x1, y1]]` at the start of a line: both forms
parse. Unlimited-OCR's dialect ("det_label", FAMILY.md §3.6) writes one box per block as
`<|det|>label [x0, y0, x1, y1]<|/det|>` followed by its content (`label [x0, y0, x1, y1]` once stripped).
Both dialects are recognised without being named, so text from any server parses. Boxes are read with a
regular expression, never eval. Truncated output (no closing tag, no EOS) keeps every complete box and all
text.

Markdown follows the official clean-up (§8.2): tags removed, each `image` block replaced by a link to
its crop, `\\coloneqq` -> `:=`, `\\eqqcolon` -> `=:`, runs of blank lines collapsed, plus the eval
script's removal of `<center>` and trailing spaces on lines. Tables stay HTML unless asked for pipes.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .results import Element, PageResult
from .tables import tables_to_markdown

EOS_TEXT = "<｜end▁of▁sentence｜>"
TAGGED = re.compile(r"<\|ref\|>(?P<label>.*?)<\|/ref\|>\s*<\|det\|>(?P<coords>.*?)(?P<close><\|/det\|>|\Z)", re.DOTALL)
STRIPPED = re.compile(r"^[ \t]*(?P<label>[A-Za-z][\w\- ]{0,40}?)[ \t]*(?P<coords>\[\[[\d\s,.\[\]]*)", re.MULTILINE)
DET_LABEL = re.compile(r"<\|det\|>\s*(?P<label>[^\s\[<]+)\s*(?P<coords>\[[^\]<]*\]?)\s*(?P<close><\|/det\|>|\Z)")
DET_STRIPPED = re.compile(r"^[ \t]*(?P<label>[A-Za-z][\w\-]{0,40}) (?P<coords>\[\d+, \d+, \d+, \d+\])", re.MULTILINE)
SYNTAXES = ("ref_det", "det_label")  # ModelSpec.box_syntax values this parser reads
BOX = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]")
LEFTOVER_TAGS = re.compile(r"<\|/?(?:ref|det|grounding)\|>|<｜▁pad▁｜>")
KNOWN_TAGS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", EOS_TEXT)
GRID = 999
PAGE_START = re.compile(r"\A\s*<PAGE>[ \t]*\n?")  # Unlimited-OCR starts each page of a multi-page answer so


def parse_boxes(coords: str) -> list[tuple[int, int, int, int]]:
    """Every complete [x0, y0, x1, y1] in `coords`, clamped to the grid, corners ordered."""
    boxes = []
    for m in BOX.finditer(coords):
        x0, y0, x1, y1 = (min(max(int(float(v)), 0), GRID) for v in m.groups())
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return boxes


def _stripped_v1(text: str) -> list[tuple[int, int, str, str, bool]]:
    out = []
    for m in STRIPPED.finditer(text):
        coords = m.group("coords")
        closed = coords.rstrip().endswith("]]")
        if parse_boxes(coords) or m.end() == len(text.rstrip()):
            out.append((m.start(), m.end(), m.group("label").strip(), coords, closed))
    return out


def _stripped_det_label(text: str) -> list[tuple[int, int, str, str, bool]]:
    return [(m.start(), m.end(), m.group("label"), m.group("coords"), True) for m in DET_STRIPPED.finditer(text)]


def _tagged(pattern: re.Pattern) -> Callable[[str], list[tuple[int, int, str, str, bool]]]:
    return lambda text: [(m.start(), m.end(), m.group("label").strip(), m.group("coords"), bool(m.group("close")))
                         for m in pattern.finditer(text)]


# Readers of each dialect, tagged forms before stripped ones; a hint only says which dialect to try first.
READERS = {"ref_det": (_tagged(TAGGED), _stripped_v1), "det_label": (_tagged(DET_LABEL), _stripped_det_label)}


def _matches(text: str, syntax: str | None = None) -> list[tuple[int, int, str, str, bool]]:
    """(start, end, label, coords, closed) for every box tag, in the first form that finds any. Either dialect
    is recognised by itself (text from any server parses); `syntax` (the model's) is tried first."""
    if syntax is not None and syntax not in SYNTAXES:
        raise ValueError(f"unknown box syntax {syntax!r}; this parser reads {SYNTAXES}")
    first = syntax or "ref_det"
    order = [first] + [s for s in SYNTAXES if s != first]
    for form in (0, 1):  # tagged in either dialect beats stripped in either
        for dialect in order:
            found = READERS[dialect][form](text)
            if found:
                return found
    return []


def _strip_dangling_tag(text: str) -> str:
    """Drop a tag cut in the middle at the very end ("<|re"), left by a token limit."""
    for tag in KNOWN_TAGS:
        for k in range(len(tag) - 1, 1, -1):
            if text.endswith(tag[:k]):
                return text[: -k]
    return text


def tidy(text: str, table_format: str = "html") -> str:
    text = LEFTOVER_TAGS.sub("", text.replace(EOS_TEXT, ""))
    text = text.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    text = re.sub(r"</?center>", "", text)
    if table_format == "markdown":
        text = tables_to_markdown(text)
    elif table_format != "html":
        raise ValueError(f"table_format must be 'html' or 'markdown', got {table_format!r}")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _to_units(box: tuple[int, int, int, int], width: float, height: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (round(x0 / GRID * width, 2), round(y0 / GRID * height, 2),
            round(x1 / GRID * width, 2), round(y1 / GRID * height, 2))


def _union(boxes: list[tuple]) -> tuple:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _attach_tables(elements: list[Element]) -> None:
    """The model often writes a `table` tag, then its caption's tag and text, then the HTML: move the
    HTML to the table element, as docling does (the markdown keeps the model's order)."""
    for el, nxt in zip(elements, elements[1:]):
        if el.label == "table" and "<table" not in el.text and "caption" in nxt.label:
            m = re.search(r"<table\b.*?(?:</table>|\Z)", nxt.text, re.DOTALL | re.IGNORECASE)
            if m:
                el.text = (el.text + "\n\n" + m.group(0)).strip()
                nxt.text = (nxt.text[: m.start()] + nxt.text[m.end():]).strip()


def figure_placeholder(figure_id: str) -> str:
    return f"[image {figure_id}]"


def parse_page(raw_text: str, width: float, height: float, unit: str = "px", *, page: int = 0,
               image: Any = None, finish_reason: str | None = None, table_format: str = "html",
               box_syntax: str | None = None) -> PageResult:
    """Post-process the raw output of one page of size width x height (in `unit`).

    Args:
        raw_text: model output, special tokens kept or skipped, EOS string optional.
        image: the page image the model saw (PIL); when given, `image` blocks are cropped from it.
        finish_reason: "eos" | "length" when known; "length" marks the page truncated.
        table_format: "html" (as the model writes) or "markdown" (pipe tables, spans repeated).
        box_syntax: the dialect to try first, "ref_det" (v1, OCR-2) or "det_label" (Unlimited-OCR); None: v1's
            first. Either is recognised without it.

    A figure (`image` block) is written as a labelled placeholder, `[image {page}_{k}]`: it becomes a link
    (`![image](...)`) only where its crop is saved to a file (`ids.save_figures`), so no link points nowhere.
    """
    if finish_reason is None and EOS_TEXT in raw_text:
        finish_reason = "eos"
    cut = PAGE_START.sub("", raw_text.split(EOS_TEXT)[0], count=1)
    text = _strip_dangling_tag(cut)
    matches = _matches(text, box_syntax)
    elements: list[Element] = []
    pieces: list[str] = []
    lead = text[: matches[0][0]] if matches else text
    if lead.strip():
        elements.append(Element("text", lead))
        pieces.append(lead)
    figures = 0
    cut_inside_tag = text != cut
    for i, (start, end, label, coords, closed) in enumerate(matches):
        content = text[end: matches[i + 1][0] if i + 1 < len(matches) else len(text)]
        cut_inside_tag |= not closed
        norm = parse_boxes(coords)
        el = Element(label, content)  # raw until _attach_tables has run
        if norm:
            el.boxes_norm = norm
            el.boxes = [_to_units(b, width, height) for b in norm]
            el.bbox_norm, el.bbox = _union(norm), _union(el.boxes)
        if label == "image" and norm:
            el.figure_id = f"{page}_{figures}"
            el.image = _crop(image, el.bbox_norm)
            pieces.append(figure_placeholder(el.figure_id))
            figures += 1
        pieces.append(content)
        elements.append(el)
    _attach_tables(elements)
    for el in elements:
        el.text = tidy(el.text, table_format)
    markdown = tidy("\n\n".join(p.strip() for p in pieces if p.strip()), table_format)
    truncated = finish_reason == "length" or (finish_reason is None and (cut_inside_tag or _open_table(text)))
    status = "truncated" if truncated else "ok" if markdown or any(e.bbox for e in elements) else "empty"
    return PageResult(page=page, markdown=markdown, raw_text=raw_text, elements=elements, status=status,
                      width=width, height=height, unit=unit, finish_reason=finish_reason)


def _open_table(text: str) -> bool:
    return text.lower().count("<table") > text.lower().count("</table>")


def _crop(image: Any, box: tuple[int, int, int, int] | None) -> Any:
    """Crop a 0-999 box from the page image in pixels, truncating as the official script does."""
    if image is None or box is None:
        return None
    W, H = image.size
    x0, y0, x1, y1 = (int(box[0] / GRID * W), int(box[1] / GRID * H), int(box[2] / GRID * W), int(box[3] / GRID * H))
    if x1 <= x0 or y1 <= y0:
        return None
    return image.crop((x0, y0, x1, y1))
