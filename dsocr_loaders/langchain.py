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

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from functools import cache, cached_property
from itertools import groupby
from pathlib import Path

try:
    from langchain_core.document_loaders import BaseBlobParser, BaseLoader, Blob
    from langchain_core.documents import Document
except ImportError as e:  # say which extra brings it, not only which module is missing
    raise ImportError(f"dsocr_loaders.langchain needs langchain-core ({e}): pip install 'dsocr[langchain]'") from e

from .ocr.ids import (chunk_metadata, content_hash, content_key, element_metadata, ocr_metadata, page_metadata,
                      save_figures, single_status, stable_id)
from .ocr.options import LoaderOptions
from .ocr.progress import with_progress
from .ocr.results import PageResult


class _Documents:
    """PageResults -> Documents, shared by the loader and the parser (options come from LoaderOptions)."""

    def _from_results(self, path: Path) -> Iterator[Document]:
        """A Ray job's rows, with the job's content key in place of this loader's (same ids as a local run)."""
        from .ocr.parquet import read_results

        rows = read_results(path)
        digests = {r.source: sha for r, sha, _ in rows}
        key = next((k for _, _, k in rows if k), None)
        if key is not None:
            self.__dict__["_ids"] = (*key, f"figures={self.figures_dir}", f"delimiter={self.pages_delimiter!r}")
        yield from self._documents((r for r, _, _ in rows), lambda source: digests.get(source, ""))

    def _documents(self, results: Iterable[PageResult], digest: Callable[[str], str]) -> Iterator[Document]:
        """Documents of one load, file by file (results of one file are consecutive); `digest(source)`
        hashes a file's content for its ids."""
        for source, group in groupby(results, key=lambda r: r.source):
            yield from self._file(with_progress(group, source, self.show_progress, sized=self.pages is None), source,
                                  digest(source))

    def _file(self, results: Iterable[PageResult], source: str, digest: str) -> Iterator[Document]:
        results = self.kept(results)
        if self.split == "single":
            pages = list(results)
            if pages:
                yield self._single(pages, source, digest)
            return
        if self.split == "chunks":
            yield from self._chunks(list(results), source, digest)
            return
        for r in results:
            yield from self._page(r, source, digest)

    def _chunks(self, pages: list[PageResult], source: str, digest: str) -> Iterator[Document]:
        """Failed pages as their error Documents, then the file's chunks (page content: headings, then body)."""
        for r in pages:
            if r.status == "error":
                yield from self._page(r, source, digest)
        ok = [r for r in pages if r.status != "error"]
        if not ok:
            return
        base = page_metadata(ok[0], source)
        for k in ("page", "page_label"):
            base.pop(k, None)
        base |= {k: v for k, v in ocr_metadata(ok[0], include_boxes=False).items() if not k.startswith("ocr_quality_")}
        for k in ("ocr_status", "ocr_finish_reason", "ocr_vision_tokens", "ocr_text_tokens", "ocr_error"):
            base.pop(k, None)
        for c in self.chunks(ok):
            meta = base | chunk_metadata(c, ok, self.include_boxes, self.nested_metadata)
            yield Document(c.contextualized, metadata=meta, id=stable_id(digest, "chunk", c.index, *self._chunk_ids))

    @cached_property
    def _chunk_ids(self) -> tuple[str, ...]:
        return (*self._ids, f"chunk_tokens={self.chunk_tokens}", f"headers_footers={not self.drop_headers_footers}")

    @cached_property
    def _ids(self) -> tuple[str, ...]:
        """What besides the file and page decides a Document's id (every setting that changes its content)."""
        return content_key(self.pipeline, f"figures={self.figures_dir}", f"delimiter={self.pages_delimiter!r}")

    def _single(self, pages: list[PageResult], source: str, digest: str) -> Document:
        meta = page_metadata(pages[0], source)
        for k in ("page", "page_label"):
            meta.pop(k, None)
        meta |= ocr_metadata(pages[0], include_boxes=False) | single_status(pages)
        meta.pop("ocr_error", None)
        text = self.pages_delimiter.join(r.markdown for r in pages)
        return Document(text, metadata=meta, id=stable_id(digest, "single", *self._ids))

    def _page(self, r: PageResult, source: str, digest: str) -> Iterator[Document]:
        if self.figures_dir is not None:
            save_figures(r, self.figures_dir, Path(source).stem)
        base = page_metadata(r, source)
        if self.split == "page" or r.status == "error" or not r.elements:
            meta = base | ocr_metadata(r, self.include_boxes, self.nested_metadata)
            yield Document(r.markdown, metadata=meta, id=stable_id(digest, r.page, *self._ids))
            return
        common = base | ocr_metadata(r, include_boxes=False)
        for i, e in enumerate(r.elements):
            meta = common | element_metadata(e, i, self.nested_metadata)
            yield Document(e.text, metadata=meta, id=stable_id(digest, r.page, i, *self._ids))



@dataclass(kw_only=True, eq=False)
class DeepSeekOCRLoader(BaseLoader, _Documents, LoaderOptions):
    """Load PDFs and images as Documents with DeepSeek-OCR.

    `file_path`: a path (PDF or image; a directory loads every PDF/image in it) or a list of paths; every
    other option is keyword-only and described in `dsocr_loaders.ocr.options.LoaderOptions`.
    """

    file_path: str | Path | list[str | Path] = field(kw_only=False)

    @property
    def file_paths(self) -> list[str]:
        return [str(self.file_path)] if isinstance(self.file_path, (str, Path)) else [str(p) for p in self.file_path]

    @classmethod
    def from_results(cls, path: str | Path, **options: Any) -> "DeepSeekOCRLoader":
        """Documents from a Ray job's output (`dsocr_loaders.ray.run_job`) instead of running the model: the
        same metadata and ids as a local run with the job's settings. `options`: split, pages_delimiter, ..."""
        loader = cls(str(path), **options)
        loader._results = Path(path)
        return loader

    def lazy_load(self) -> Iterator[Document]:
        """Documents in file and page order. A file that cannot be read raises (one file) or, for several
        files, becomes one error Document and the rest go on (`on_error`); an unusable engine raises
        EngineUnavailableError at once."""
        if getattr(self, "_results", None) is not None:
            yield from self._from_results(self._results)
            return
        source = self.file_paths if len(self.file_paths) > 1 else self.file_paths[0]
        results = self.pipeline.run(source, self.pages, self.password, on_error=self.policy_for(source))
        yield from self._documents(results, content_hash)

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Pages are rendered and OCR'd off the event loop; Documents come in page order as they finish."""
        source = self.file_paths if len(self.file_paths) > 1 else self.file_paths[0]
        digest = cache(content_hash)
        group: list[PageResult] = []  # split="single": one file's pages
        async for r in self.pipeline.arun(source, self.pages, self.password, on_error=self.policy_for(source)):
            if self.split not in ("single", "chunks"):  # per page: as soon as each page is ready
                for doc in self._file([r], r.source, digest(r.source)):
                    yield doc
                continue
            if group and r.source != group[0].source:
                for doc in self._file(group, group[0].source, digest(group[0].source)):
                    yield doc
                group = []
            group.append(r)
        if group:
            for doc in self._file(group, group[0].source, digest(group[0].source)):
                yield doc


@dataclass(kw_only=True, eq=False)
class DeepSeekOCRParser(BaseBlobParser, _Documents, LoaderOptions):
    """Parse PDF or image blobs with DeepSeek-OCR (for `GenericLoader` and custom blob loaders).

    The same keyword-only options as DeepSeekOCRLoader (LoaderOptions); `pages` and `password` apply to
    every blob.
    """

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        data = blob.as_bytes()
        source = str(blob.source) if blob.source is not None else "<blob>"
        results = self.pipeline.run(data, self.pages, self.password, on_error=self.on_error or "raise", name=source)
        yield from self._documents(results, lambda _: content_hash(data))

