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

try:
    from llama_index.core.readers.base import BasePydanticReader
    from llama_index.core.schema import Document, ImageDocument, NodeRelationship, RelatedNodeInfo
except ImportError as e:  # say which extra brings it, not only which module is missing
    raise ImportError(f"dsocr_loaders.llama_index needs llama-index-core ({e}): pip install 'dsocr[llamaindex]'") from e
from pydantic import ConfigDict, Field, PrivateAttr

from .ocr.ids import (chunk_metadata, content_hash, content_key, element_metadata, ocr_metadata, page_metadata,
                      save_figures, single_status, stable_id)
from .ocr.options import LoaderOptions
from .ocr.pipeline import OCRPipeline
from .ocr.progress import with_progress
from .ocr.results import PageResult
from .ocr.settings import (DEFAULT_CHUNK_TOKENS, DEFAULT_DPI, DEFAULT_ON_ERROR, DEFAULT_ON_SUSPECT, DEFAULT_SPLIT,
                           DEFAULT_TABLE_FORMAT, PAGES_DELIMITER, default_device, default_model)
from .ocr.sources import iter_inputs
from .ocr.types import DEFAULT_MAX_NEW_TOKENS

SHOWN_KEYS = {"file_path", "file_name", "page_label", "page_number", "total_pages", "category"}


class DeepSeekOCRReader(BasePydanticReader):
    """DeepSeek-OCR as a LlamaIndex reader: the options of LoaderOptions (the LangChain loader's), validated
    at construction, plus `extract_figures` (an ImageDocument per figure crop)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)  # a misspelt option fails here
    is_remote: bool = False
    pipeline: Any = Field(default=None, exclude=True, description="an OCRPipeline to use as it is")
    model: str = Field(default_factory=default_model, description="hub id or checkpoint directory (openai: served "
                       "name); default $DSOCR_MODEL, else deepseek-ai/DeepSeek-OCR")
    device: str = Field(default_factory=default_device, description='"auto" | "cuda" | "cpu"; default $DSOCR_DEVICE')
    engine: Any = Field(default=None, exclude=True, description='"local", "openai" or an engine object')
    base_url: str | None = Field(default=None, description='OpenAI-compatible server for engine="openai"')
    api_key: str | None = Field(default=None, exclude=True, repr=False,
                                description="default: $DSOCR_API_KEY, else $OPENAI_API_KEY")
    engine_options: dict | None = Field(default=None, description="e.g. {'concurrency': 16, 'timeout': 300}")
    task: str | None = Field(default=None, description="official prompt by name; None: the model's (markdown)")
    prompt: str | None = Field(default=None, description="raw prompt with one <image>, instead of a task")
    locate_text: str | None = Field(default=None, description='what to find with task="locate"')
    mode: str | None = Field(default=None, description="resolution mode; None: the model's (gundam)")
    max_crops: int | None = Field(default=None, description="tile cap; None: the model's (v1 6, Unlimited-OCR 32)")
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, description="token limit per page")
    ngram_size: int | None = Field(default=None, description="n-gram guard; None: the model's, 0: off")
    window_size: int | None = Field(default=None, description="n-gram guard window; None: the model's")
    pages_per_pass: int = Field(default=1, description="Unlimited-OCR: pages read together in one pass")
    dpi: float = Field(default=DEFAULT_DPI, description="PDF rendering resolution")
    table_format: str = Field(default=DEFAULT_TABLE_FORMAT, description='"html" | "markdown"')
    pages: Any = Field(default=None, description='"1-3,7" (1-based) or 0-based ints')
    password: str | None = Field(default=None, exclude=True, repr=False, description="for encrypted PDFs")
    split: str = Field(default=DEFAULT_SPLIT, description='"page" | "single" | "elements" | "chunks"')
    pages_delimiter: str = Field(default=PAGES_DELIMITER, description='joins pages with split="single"')
    chunk_tokens: int = Field(default=DEFAULT_CHUNK_TOKENS, description='split="chunks": token budget per chunk')
    drop_headers_footers: bool = Field(default=True, description="page headers/footers out of chunk text")
    on_suspect: str = Field(default=DEFAULT_ON_SUSPECT, description='pages of doubtful quality: "keep" | "retry" | "drop"')
    include_boxes: bool = Field(default=True, description="the page's boxes as ocr_elements")
    nested_metadata: bool = Field(default=False, description="boxes as lists, not JSON strings")
    figures_dir: str | None = Field(default=None, description="save figure crops there and link them")
    show_progress: bool = Field(default=False, description="a tqdm bar per file")
    cache: Any = Field(default=None, description="None/False, True (user cache dir), a sqlite path or a ResultCache")
    on_error: str = Field(default=DEFAULT_ON_ERROR, description='"raise" | "page"')
    extract_figures: bool = Field(default=False, description="also yield an ImageDocument per figure crop")
    _pipeline: OCRPipeline | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._build()  # validates mode, task and the rest now, not at the first page (cheap: no engine built)

    @classmethod
    def class_name(cls) -> str:
        return "DeepSeekOCRReader"

    def _build(self) -> OCRPipeline:
        LoaderOptions.validate(self)  # type: ignore[arg-type]  # the same fields, by name
        return self.pipeline or LoaderOptions.build_pipeline(self, extract_figures=self.extract_figures or None)

    def close(self) -> None:
        """Close the pipeline (and engine) this reader built; an injected pipeline belongs to its caller."""
        if self._pipeline is not None and self.pipeline is None:
            self._pipeline.close()
        self._pipeline = None

    def __enter__(self) -> "DeepSeekOCRReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def ocr_pipeline(self) -> OCRPipeline:
        if self._pipeline is None:  # dropped by pickling: rebuilt lazily in the new process
            self._pipeline = self._build()
        return self._pipeline

    def __getstate__(self) -> dict[str, Any]:  # drop the live pipeline (and model); rebuilt lazily
        state = super().__getstate__()
        state["__pydantic_private__"] = {**(state.get("__pydantic_private__") or {}), "_pipeline": None}
        return state

    def lazy_load_data(self, file_path: str | Path | Iterable[str | Path], extra_info: dict | None = None,
                       fs: Any = None) -> Iterator[Document]:
        inputs = list(_sources(file_path, fs))
        options = self._run_options(file_path, len(inputs))
        for name, data in inputs:
            results = self.ocr_pipeline.run(data, self.pages, self.password, name=name, **options)
            yield from self._to_documents(results, name, data, extra_info or {})

    async def aload_data(self, file_path: str | Path | Iterable[str | Path], extra_info: dict | None = None,
                         fs: Any = None) -> list[Document]:
        docs: list[Document] = []
        inputs = list(_sources(file_path, fs))
        options = self._run_options(file_path, len(inputs))
        for name, data in inputs:
            pages = [r async for r in self.ocr_pipeline.arun(data, self.pages, self.password, name=name, **options)]
            docs.extend(self._to_documents(iter(pages), name, data, extra_info or {}))
        return docs

    def _run_options(self, file_path: Any, n_inputs: int) -> dict[str, Any]:
        """Several inputs (a folder, a list): an unreadable file is one error Document by default, and a page
        selection keeps the pages each file has."""
        several = n_inputs > 1 or (isinstance(file_path, (str, Path)) and Path(file_path).is_dir())
        return {"on_error": self.on_error or ("page" if several else "raise"), "several": several}

    # ---- conversion ----------------------------------------------------------------------------
    def _chunk_nodes(self, pages: list[PageResult], name: str, digest: str, ids: tuple, file_meta: dict,
                     extra: dict) -> Iterator[Document]:
        """Failed pages as error Documents, then the file's chunks linked SOURCE / PREVIOUS / NEXT."""
        for r in pages:
            if r.status == "error":
                meta = file_meta | {"page_number": r.page + 1} | ocr_metadata(r, False) | extra
                yield _doc(r.markdown, meta, stable_id(digest, r.page, *ids), shown=extra)
        ok = [r for r in pages if r.status != "error"]
        if not ok:
            return
        key = (*ids, f"chunk_tokens={self.chunk_tokens}", f"headers_footers={not self.drop_headers_footers}")
        base = file_meta | {"total_pages": ok[0].total_pages, "ocr_model": ok[0].settings.get("model")}
        docs = [_doc(c.contextualized, base | chunk_metadata(c, ok, self.include_boxes, self.nested_metadata) | extra,
                     stable_id(digest, "chunk", c.index, *key), shown=("headings",) + tuple(extra))
                for c in LoaderOptions.chunks(self, ok)]  # type: ignore[arg-type]
        yield from _link(docs, stable_id(digest, "file", *key))

    def load_results(self, path: str | Path, extra_info: dict | None = None) -> list[Document]:
        """Documents from a Ray job's output (`dsocr_loaders.ray.run_job`) instead of running the model: the same
        metadata and ids as a local run with the job's settings."""
        from itertools import groupby

        from .ocr.parquet import read_results

        docs: list[Document] = []
        for name, group in groupby(read_results(path), key=lambda row: row[0].source):
            rows = list(group)
            key = next((k for _, _, k in rows if k), None)
            docs.extend(self._to_documents(iter(r for r, _, _ in rows), name, None, extra_info or {},
                                           digest=rows[0][1], key=key))
        return docs

    def _to_documents(self, results: Iterator[PageResult], name: str, data: Any, extra: dict, *,
                      digest: str | None = None, key: list[str] | None = None) -> Iterator[Document]:
        digest = digest if digest is not None else content_hash(data)
        suffix = (f"figures={self.figures_dir}/{self.extract_figures}", f"delimiter={self.pages_delimiter!r}")
        ids = (*key, *suffix) if key else content_key(self.ocr_pipeline, *suffix)
        results = LoaderOptions.kept(self, with_progress(results, name, self.show_progress))  # type: ignore[arg-type]
        file_meta = {"file_path": name, "file_name": Path(name).name}
        if self.split == "chunks":
            yield from self._chunk_nodes(list(results), name, digest, ids, file_meta, extra)
            return
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
            base = file_meta if r.is_file_error else \
                file_meta | {"page_label": r.page_label, "page_number": r.page + 1, "total_pages": r.total_pages}
            base |= {k: v for k, v in page_metadata(r, name).items() if k not in ("source", "page", "file_path")}
            if self.figures_dir is not None:
                save_figures(r, self.figures_dir, Path(name).stem)
            if self.split == "page" or r.status == "error" or not r.elements:
                meta = base | ocr_metadata(r, self.include_boxes, self.nested_metadata) | extra
                yield _doc(r.markdown, meta, stable_id(digest, r.page, *ids), shown=extra)
            else:
                for i, e in enumerate(r.elements):
                    meta = base | ocr_metadata(r, False) | element_metadata(e, i, self.nested_metadata) | extra
                    yield _doc(e.text, meta, stable_id(digest, r.page, i, *ids), shown=extra)
            if self.extract_figures:
                yield from _figure_documents(r, base, extra, digest, ids)


def _link(docs: list[Document], source_id: str) -> list[Document]:
    """SOURCE (the file), PREVIOUS and NEXT relationships between consecutive chunk nodes."""
    for i, d in enumerate(docs):
        d.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=source_id)
        if i > 0:
            d.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id=docs[i - 1].id_)
        if i + 1 < len(docs):
            d.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=docs[i + 1].id_)
    return docs


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
