"""A tqdm bar over one file's PageResults (the adapters' `show_progress=True`), sized once the first page tells
how many pages the file has."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .results import PageResult


def with_progress(results: Iterator[PageResult], source: str, enabled: bool, sized: bool = True) -> Iterator[PageResult]:
    if not enabled:
        yield from results
        return
    from tqdm.auto import tqdm

    with tqdm(desc=Path(source).name, unit="page") as bar:
        for r in results:
            if sized and bar.total is None:
                bar.total = r.total_pages
            bar.update(1)
            yield r
