"""HTML tables (as DeepSeek-OCR writes them) -> markdown pipe tables.

Row and column spans are expanded by repeating the cell, as docling does for the same output, so
every row has the full width and a reader of one row still sees its headers. The first row becomes
the markdown header. Parsing uses the standard library's HTMLParser: no eval, no extra dependency,
and unclosed tags (truncated output) still give the rows read so far.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

TABLE_RE = re.compile(r"<table\b.*?(?:</table>|$)", re.DOTALL | re.IGNORECASE)


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, int, int]]] = []  # (text, rowspan, colspan)
        self._cell: list[str] | None = None
        self._span = (1, 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._end_cell()
            a = dict(attrs)
            self._span = (_int(a.get("rowspan")), _int(a.get("colspan")))
            self._cell = []
            if not self.rows:
                self.rows.append([])
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            self._end_cell()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _end_cell(self) -> None:
        if self._cell is not None:
            text = " ".join("".join(self._cell).split())
            self.rows[-1].append((text, *self._span))
            self._cell = None

    def close(self) -> None:
        super().close()
        self._end_cell()


def _int(v: str | None) -> int:
    try:
        return max(1, min(int(v or 1), 1000))
    except ValueError:
        return 1


def table_grid(html: str) -> list[list[str]]:
    """Rows of cell texts with spans expanded into a rectangle."""
    p = _Cells()
    p.feed(html)
    p.close()
    grid: dict[tuple[int, int], str] = {}
    for r, row in enumerate(p.rows):
        c = 0
        for text, rowspan, colspan in row:
            while (r, c) in grid:  # skip cells filled by a rowspan from above
                c += 1
            for dr in range(rowspan):
                for dc in range(colspan):
                    grid[(r + dr, c + dc)] = text
            c += colspan
    if not grid:
        return []
    n_rows = max(r for r, _ in grid) + 1
    n_cols = max(c for _, c in grid) + 1
    return [[grid.get((r, c), "") for c in range(n_cols)] for r in range(n_rows)]


def html_table_to_markdown(html: str) -> str:
    rows = table_grid(html)
    if not rows:
        return ""
    esc = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "| " + " | ".join("---" for _ in esc[0]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def tables_to_markdown(text: str) -> str:
    """Replace every HTML table in `text` by a pipe table."""
    return TABLE_RE.sub(lambda m: html_table_to_markdown(m.group(0)), text)
