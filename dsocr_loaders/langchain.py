"""LangChain adapters: `DeepSeekOCRLoader` (BaseLoader) and `DeepSeekOCRParser` (BaseBlobParser).

Setup:
    pip install "dsocr[langchain]"

Instantiate:
    from dsocr_loaders.langchain import DeepSeekOCRLoader
    loader = DeepSeekOCRLoader("report.pdf", pages="1-3", mode="gundam")   # model loads on first use

Lazy load:
    for doc in loader.lazy_load():
        print(doc.metadata["page"], doc.metadata["ocr_status"], doc.page_content[:80])
    # 0 ok # 5.1 Hyper Parameter Optimization ...

Async load:
    docs = [doc async for doc in loader.alazy_load()]   # pages in order, the event loop stays free

With langchain-community: GenericLoader.from_filesystem("docs/", parser=DeepSeekOCRParser()).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from langchain_core.document_loaders import BaseBlobParser, BaseLoader, Blob
from langchain_core.documents import Document

from .documents import (content_hash, element_metadata, ocr_metadata, page_metadata, save_figures, single_status,
                        stable_id)
from .engines import DEFAULT_MODEL
from .pipeline import OCRPipeline
from .results import PageResult
from .sources import iter_inputs

SPLITS = ("page", "single", "elements")


class _Settings:
    """Keyword-only settings shared by the loader and the parser."""

    def _configure(self, *, model: str, device: str, engine: Any, task: str, prompt: str | None, mode: str,
                   max_new_tokens: int, dpi: float, split: str, pages_delimiter: str, include_boxes: bool,
                   nested_metadata: bool, figures_dir: str | None, table_format: str, progress: bool,
                   **pipeline_options: Any) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.pipeline = OCRPipeline(model, device=device, engine=engine, task=task, prompt=prompt, mode=mode,
                                    max_new_tokens=max_new_tokens, dpi=dpi, table_format=table_format,
                                    extract_figures=figures_dir is not None, on_error="raise", **pipeline_options)
        self.split, self.pages_delimiter = split, pages_delimiter
        self.include_boxes, self.nested, self.figures_dir, self.progress = include_boxes, nested_metadata, figures_dir, progress

    def _documents(self, results: Iterator[PageResult], source: str, digest: str) -> Iterator[Document]:
        results = self._progress(results, source)
        if self.split == "single":
            pages = list(results)
            if pages:
                yield self._single(pages, source, digest)
            return
        for r in results:
            yield from self._page(r, source, digest)

    @cached_property
    def _ids(self) -> tuple[str, str]:
        """What besides the file and page decides a Document's id: the OCR settings and the model."""
        return self.pipeline.settings.key(), getattr(self.pipeline.engine, "identity", "")

    def _single(self, pages: list[PageResult], source: str, digest: str) -> Document:
        meta = page_metadata(pages[0], source)
        for k in ("page", "page_label"):
            meta.pop(k)
        meta |= ocr_metadata(pages[0], include_boxes=False) | single_status(pages)
        meta.pop("ocr_error", None)
        text = self.pages_delimiter.join(r.markdown for r in pages)
        return Document(text, metadata=meta, id=stable_id(digest, "single", *self._ids))

    def _page(self, r: PageResult, source: str, digest: str) -> Iterator[Document]:
        if self.figures_dir is not None:
            save_figures(r, self.figures_dir, Path(source).stem)
        base = page_metadata(r, source)
        if self.split == "page" or r.status == "error" or not r.elements:
            meta = base | ocr_metadata(r, self.include_boxes, self.nested)
            yield Document(r.markdown, metadata=meta, id=stable_id(digest, r.page, *self._ids))
            return
        common = base | ocr_metadata(r, include_boxes=False)
        for i, e in enumerate(r.elements):
            meta = common | element_metadata(e, i, self.nested)
            yield Document(e.text, metadata=meta, id=stable_id(digest, r.page, i, *self._ids))

    def _progress(self, results: Iterator[PageResult], source: str) -> Iterator[PageResult]:
        if not self.progress:
            yield from results
            return
        from tqdm.auto import tqdm

        with tqdm(desc=Path(source).name, unit="page") as bar:
            for r in results:
                if self.pages is None:
                    bar.total = r.total_pages
                bar.update(1)
                yield r


def _defaults(kw: dict[str, Any]) -> dict[str, Any]:
    base = dict(model=DEFAULT_MODEL, device="auto", engine=None, task="markdown", prompt=None, mode="gundam",
                max_new_tokens=8192, dpi=144, split="page", pages_delimiter="\n\f", include_boxes=True,
                nested_metadata=False, figures_dir=None, table_format="html", progress=False)
    return base | kw


class DeepSeekOCRLoader(BaseLoader, _Settings):
    """Load PDFs and images as Documents with DeepSeek-OCR.

    Args:
        file_path: a path (PDF or image; a directory loads every PDF/image in it) or a list of paths.
        model, device: checkpoint (hub id or directory) and "auto" | "cuda" | "cpu" for the local engine.
        engine: "local" (default), "openai" with `base_url=` (a vLLM/SGLang/OpenAI-compatible server; key from
            `api_key=` or $DSOCR_API_KEY / $OPENAI_API_KEY; `engine_options=` e.g. {"concurrency": 16}), or an
            engine instance (e.g. one shared between loaders).
        task, prompt, mode, max_new_tokens, dpi, table_format: see OCRPipeline.
        pages: "1-3,7" (1-based) or 0-based ints; password: for encrypted PDFs.
        split: "page" (one Document per page, default), "single" (one per file, pages joined with
            `pages_delimiter`), or "elements" (one per grounded block, with its label and box).
        include_boxes: add the page's boxes as `ocr_elements`; nested_metadata: as lists, not JSON strings.
        figures_dir: save figure crops there and link them from the markdown.
        progress: show a tqdm bar per file.
        cache: None (default, off), True (user cache dir), a sqlite path or a ResultCache: unchanged
            pages are not OCR'd again (key: page pixels + settings + model).
    """

    def __init__(self, file_path: str | Path | list[str | Path], *, pages: Any = None, password: str | None = None,
                 **settings: Any) -> None:
        self.file_paths = [str(file_path)] if isinstance(file_path, (str, Path)) else [str(p) for p in file_path]
        self.pages, self.password = pages, password
        self._configure(**_defaults(settings))

    def lazy_load(self) -> Iterator[Document]:
        for name, _ in iter_inputs(self.file_paths, self.pipeline.glob):  # directories expand to their files
            yield from self._documents(self.pipeline.run(name, self.pages, self.password), name, content_hash(name))

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Pages are rendered and OCR'd off the event loop; Documents come in page order as they finish."""
        for name, _ in iter_inputs(self.file_paths, self.pipeline.glob):
            digest = content_hash(name)
            results = self.pipeline.arun(name, self.pages, self.password)
            if self.split == "single":
                pages = [r async for r in results]
                if pages:
                    yield self._single(pages, name, digest)
                continue
            async for r in results:
                for doc in self._page(r, name, digest):
                    yield doc


class DeepSeekOCRParser(BaseBlobParser, _Settings):
    """Parse PDF or image blobs with DeepSeek-OCR (for `GenericLoader` and custom blob loaders).

    Same keyword settings as DeepSeekOCRLoader; `pages` and `password` apply to every blob.
    """

    def __init__(self, *, pages: Any = None, password: str | None = None, **settings: Any) -> None:
        self.pages, self.password = pages, password
        self._configure(**_defaults(settings))

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        data = blob.as_bytes()
        source = str(blob.source) if blob.source is not None else "<blob>"
        yield from self._documents(self.pipeline.run(data, self.pages, self.password), source, content_hash(data))

