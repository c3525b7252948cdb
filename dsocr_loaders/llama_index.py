"""LlamaIndex reader: `DeepSeekOCRReader` (BasePydanticReader) for PDFs and images.

    from llama_index.core import SimpleDirectoryReader
    from dsocr_loaders.llama_index import DeepSeekOCRReader

    reader = DeepSeekOCRReader(mode="gundam")            # the model loads on first use
    docs = SimpleDirectoryReader("docs/", file_extractor={".pdf": reader, ".png": reader}).load_data()

One Document per page (`split="page"`), per file (`"single"`) or per grounded block (`"elements"`), with
`page_number` (1-based), `page_label`, `total_pages`, `file_path`, `file_name` and the caller's
`extra_info`; technical keys (boxes, sizes, model, status) are excluded from the embedding and LLM text.
Ids are deterministic. The reader pickles without its model (SimpleDirectoryReader with num_workers > 1).
"""
from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import Document, ImageDocument
from pydantic import Field, PrivateAttr

from .documents import content_hash, element_metadata, ocr_metadata, page_metadata, single_status, stable_id
from .engines import DEFAULT_MODEL
from .pipeline import OCRPipeline
from .results import PageResult
from .sources import iter_inputs

SHOWN_KEYS = {"file_path", "file_name", "page_label", "page_number", "total_pages", "category"}


class DeepSeekOCRReader(BasePydanticReader):
    """DeepSeek-OCR as a LlamaIndex reader (settings as in OCRPipeline; see module docstring)."""

    is_remote: bool = False
    model: str = DEFAULT_MODEL
    device: str = "auto"
    task: str = "markdown"
    prompt: str | None = None
    mode: str = "gundam"
    max_new_tokens: int = 8192
    dpi: float = 144
    pages: Any = None
    password: str | None = None
    split: str = "page"
    pages_delimiter: str = "\n\n"
    table_format: str = "html"
    include_boxes: bool = True
    extract_figures: bool = False  # also yield an ImageDocument per figure crop
    cache: Any = Field(default=None, description="None/False, True (user cache dir), a sqlite path or a ResultCache")
    engine: Any = Field(default=None, exclude=True,
                        description='"local" (default), "openai" (a server at base_url) or an engine instance')
    base_url: str | None = Field(default=None, description='OpenAI-compatible server for engine="openai"')
    api_key: str | None = Field(default=None, exclude=True, repr=False,
                                description="default: $DSOCR_API_KEY, else $OPENAI_API_KEY")
    engine_options: dict = Field(default_factory=dict, description="e.g. {'concurrency': 16, 'timeout': 300}")
    _pipeline: OCRPipeline | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "DeepSeekOCRReader"

    @property
    def pipeline(self) -> OCRPipeline:
        if self._pipeline is None:
            if self.split not in ("page", "single", "elements"):
                raise ValueError(f"split must be 'page', 'single' or 'elements', got {self.split!r}")
            self._pipeline = OCRPipeline(self.model, device=self.device, engine=self.engine, base_url=self.base_url,
                                         api_key=self.api_key, engine_options=self.engine_options, task=self.task,
                                         prompt=self.prompt, mode=self.mode, max_new_tokens=self.max_new_tokens,
                                         dpi=self.dpi, table_format=self.table_format,
                                         extract_figures=self.extract_figures, cache=self.cache)
        return self._pipeline

    def __getstate__(self) -> dict[str, Any]:  # drop the live pipeline (and model); rebuilt lazily
        state = super().__getstate__()
        state["__pydantic_private__"] = {**(state.get("__pydantic_private__") or {}), "_pipeline": None}
        return state

    def lazy_load_data(self, file_path: str | Path | Iterable[str | Path], extra_info: dict | None = None,
                       fs: Any = None) -> Iterator[Document]:
        for name, data in _sources(file_path, fs):
            results = self.pipeline.run(data, self.pages, self.password)
            yield from self._to_documents(results, name, data, extra_info or {})

    async def aload_data(self, file_path: str | Path | Iterable[str | Path], extra_info: dict | None = None,
                         fs: Any = None) -> list[Document]:
        docs: list[Document] = []
        for name, data in _sources(file_path, fs):
            pages = [r async for r in self.pipeline.arun(data, self.pages, self.password)]
            docs.extend(self._to_documents(iter(pages), name, data, extra_info or {}))
        return docs

    # ---- conversion ----------------------------------------------------------------------------
    def _to_documents(self, results: Iterator[PageResult], name: str, data: Any, extra: dict) -> Iterator[Document]:
        digest = content_hash(data)
        ids = (self.pipeline.settings.key(), getattr(self.pipeline.engine, "identity", ""))
        file_meta = {"file_path": name, "file_name": Path(name).name}
        if self.split == "single":
            pages = list(results)
            if pages:
                meta = file_meta | {"total_pages": pages[0].total_pages} | ocr_metadata(pages[0], False)
                meta |= single_status(pages) | extra
                meta.pop("ocr_error", None)
                yield _doc(self.pages_delimiter.join(r.markdown for r in pages), meta, stable_id(digest, "single", *ids),
                           shown=extra)
            return
        for r in results:
            base = file_meta | {"page_label": r.page_label, "page_number": r.page + 1, "total_pages": r.total_pages}
            base |= {k: v for k, v in page_metadata(r, name).items() if k not in ("source", "page", "file_path")}
            if self.split == "page" or r.status == "error" or not r.elements:
                meta = base | ocr_metadata(r, self.include_boxes) | extra
                yield _doc(r.markdown, meta, stable_id(digest, r.page, *ids), shown=extra)
            else:
                for i, e in enumerate(r.elements):
                    meta = base | ocr_metadata(r, False) | element_metadata(e, i) | extra
                    yield _doc(e.text, meta, stable_id(digest, r.page, i, *ids), shown=extra)
            if self.extract_figures:
                yield from _figure_documents(r, base, extra, digest, ids)


def _doc(text: str, meta: dict, id_: str, cls: type = Document, shown: Iterable[str] = (), **kw: Any) -> Document:
    hidden = [k for k in meta if k not in SHOWN_KEYS and k not in shown]  # the caller's extra_info stays visible
    return cls(text=text, metadata=meta, id_=id_, excluded_embed_metadata_keys=hidden,
               excluded_llm_metadata_keys=hidden, **kw)


def _figure_documents(r: PageResult, meta: dict, extra: dict, digest: str, ids: tuple) -> Iterator[ImageDocument]:
    for k, e in enumerate(r.figures):
        if e.image is None:
            continue
        buf = io.BytesIO()
        e.image.convert("RGB").save(buf, "PNG")
        fig_meta = meta | element_metadata(e, k) | {"ocr_figure": True} | extra
        yield _doc("", fig_meta, stable_id(digest, r.page, "figure", k, *ids), ImageDocument, shown=extra,
                   image=base64.b64encode(buf.getvalue()).decode(), image_mimetype="image/png")


def _sources(file_path: Any, fs: Any) -> Iterator[tuple[str, Any]]:
    """(name, path or bytes): through `fs` when SimpleDirectoryReader passes a non-local filesystem."""
    paths = [file_path] if isinstance(file_path, (str, Path)) else list(file_path)
    for p in paths:
        if fs is not None:
            with fs.open(str(p), "rb") as f:
                yield str(p), f.read()
        else:
            yield from iter_inputs(p)  # a directory expands to its PDFs and images
