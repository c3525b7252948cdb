"""The paper's Table 2 on your own text (COMPRESSION.md §1.4, §4.5): each text rendered on one page per mode,
decoded, scored; rows binned by text tokens with page count, mean ratio and mean precision / recall / F1 /
edit distance per mode."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ocr.types import OCREngine
from .count import compression_stats, token_counter
from .fidelity import fidelity
from .render import DoesNotFitError, render_text_pages
from .roundtrip import decompress

@dataclass(frozen=True)
class StudyRow:
    mode: str
    text_tokens: int
    vision_tokens: int
    precision: float
    recall: float
    f1: float
    edit_distance: float
    status: str = "ok"

    @property
    def ratio(self) -> float:
        return self.text_tokens / self.vision_tokens

@dataclass
class StudyTable:
    modes: tuple[str, ...]
    bins: tuple[int, ...]  # bin edges in text tokens
    rows: list[StudyRow] = field(default_factory=list)

    def cells(self) -> list[dict[str, Any]]:
        """One dict per bin: its range, page count and per mode the means (None when a bin is empty)."""
        out = []
        for lo, hi in zip(self.bins, self.bins[1:]):
            cell: dict[str, Any] = {"bin": (lo, hi)}
            for mode in self.modes:
                rows = [r for r in self.rows if r.mode == mode and lo <= r.text_tokens < hi]
                cell["pages"] = max(cell.get("pages", 0), len(rows))
                cell[mode] = None if not rows else {
                    k: sum(getattr(r, k) for r in rows) / len(rows)
                    for k in ("ratio", "precision", "recall", "f1", "edit_distance")}
            out.append(cell)
        return out

    def to_markdown(self) -> str:
        head = ["text tokens", "pages"] + [f"{m} {c}" for m in self.modes for c in ("precision", "ratio")]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for cell in self.cells():
            values = [f"{cell['bin'][0]}–{cell['bin'][1]}", str(cell["pages"])]
            for m in self.modes:
                stats = cell[m]
                values += ["—", "—"] if stats is None else [f"{100 * stats['precision']:.1f}%", f"{stats['ratio']:.1f}×"]
            lines.append("| " + " | ".join(values) + " |")
        return "\n".join(lines)

def compression_study(texts: Iterable[str], *, modes: Sequence[str] = ("tiny", "small"), engine: OCREngine,
                      tokenizer: Any, bins: Iterable[int] = range(600, 1301, 100),
                      fit: str = "one_page") -> StudyTable:
    """Render, decode and score every text in every mode (as the Fox study: one page per text)."""
    count: Callable[[str], int] = token_counter(tokenizer)
    table = StudyTable(tuple(modes), tuple(bins))
    for text in texts:
        for mode in modes:
            try:
                pages = render_text_pages(text, mode=mode, fit=fit, tokenizer=count)
            except DoesNotFitError:
                continue  # too long for one page of this mode: not part of this study's bins
            stats = compression_stats(text, pages, tokenizer=count)
            decoded = decompress(pages, engine=engine)
            hypothesis = "\n".join(d.text for d in decoded)
            f = fidelity(text, hypothesis)
            table.rows.append(StudyRow(mode, stats.text_tokens, stats.vision_tokens, f.precision, f.recall, f.f1,
                                       f.edit_distance, ",".join(sorted({d.status for d in decoded}))))
    return table
