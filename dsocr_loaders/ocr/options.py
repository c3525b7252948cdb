"""LoaderOptions: the one list of options the LangChain loader and parser and the LlamaIndex reader take.

Each option is a keyword-only field with its default read from settings.py, so the adapters stay in step:
the LangChain classes inherit these fields as explicit keyword-only parameters, and the reader declares
the same names as pydantic fields (a test holds them equal). `pipeline()` groups them into the pipeline's
settings, or returns an injected pipeline as it is.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .chunks import Chunk, chunk_pages
from .pipeline import OCRPipeline
from .results import PageResult
from .settings import (DEFAULT_CHUNK_TOKENS, DEFAULT_DPI, DEFAULT_ON_ERROR, DEFAULT_ON_SUSPECT, DEFAULT_SPLIT,
                       DEFAULT_TABLE_FORMAT, ON_ERROR, ON_SUSPECT, PAGES_DELIMITER, SPLITS, EngineSettings, OCRSettings,
                       OutputSettings, RenderSettings, default_device, default_model)
from .sources import Pages, resolve_on_error
from .types import DEFAULT_MAX_NEW_TOKENS, OCREngine

logger = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class LoaderOptions:
    """Args (all keyword-only):
        pipeline: an OCRPipeline to use as it is (shared between loaders; the options below are then unused).
        model, device: checkpoint (hub id or directory; for engine="openai" the served name) and
            "auto" | "cuda" | "cpu" for the local engine.
        engine: "local" (default), "openai" with `base_url=` (vLLM/SGLang/Ollama; key from `api_key=` or
            $DSOCR_API_KEY / $OPENAI_API_KEY), or an engine object (e.g. one shared between loaders).
        engine_options: more keywords for the engine class, e.g. {"concurrency": 16}.
        task, prompt, locate_text, mode, max_crops, max_new_tokens, ngram_size, window_size: what the model is
            asked (see OCRSettings; None is the model's own default).
        pages_per_pass: Unlimited-OCR only: read up to this many pages of a file in one pass, split back per page.
        dpi: PDF rendering resolution. table_format: "html" | "markdown".
        pages: "1-3,7" (1-based) or 0-based ints; password: for encrypted PDFs.
        split: "page" (one Document per page), "single" (one per file, pages joined with `pages_delimiter`),
            "elements" (one per grounded block, with its label and box) or "chunks" (heading-aware chunks of
            at most `chunk_tokens`, carrying their heading path, pages and boxes; page headers and footers left
            out of the text unless drop_headers_footers=False).
        on_suspect: pages whose quality verdict is not "good": "keep" (default; the verdict is in the
            metadata), "retry" (once, with a stricter guard; the better answer is kept) or "drop" (left out,
            with a warning).
        include_boxes: the page's boxes as `ocr_elements`; nested_metadata: as lists, not JSON strings.
        figures_dir: save figure crops there and link them from the markdown.
        show_progress: a tqdm bar per file. cache: None/False, True (user cache dir), a sqlite path or a ResultCache.
        on_error: "raise" (default) or "page" (an unreadable file becomes one error Document).
    """

    pipeline: OCRPipeline | None = None
    model: str = field(default_factory=default_model)  # $DSOCR_MODEL, else deepseek-ai/DeepSeek-OCR
    device: str = field(default_factory=default_device)  # $DSOCR_DEVICE, else "auto"
    engine: OCREngine | str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    engine_options: dict[str, Any] | None = None
    task: str | None = None
    prompt: str | None = None
    locate_text: str | None = None
    mode: str | None = None
    max_crops: int | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ngram_size: int | None = None
    window_size: int | None = None
    pages_per_pass: int = 1
    dpi: float = DEFAULT_DPI
    table_format: str = DEFAULT_TABLE_FORMAT
    pages: Pages = None
    password: str | None = field(default=None, repr=False)
    split: str = DEFAULT_SPLIT
    pages_delimiter: str = PAGES_DELIMITER
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    drop_headers_footers: bool = True
    on_suspect: str = DEFAULT_ON_SUSPECT
    include_boxes: bool = True
    nested_metadata: bool = False
    figures_dir: str | None = None
    show_progress: bool = False
    cache: Any = None
    on_error: str | None = DEFAULT_ON_ERROR

    def __post_init__(self) -> None:
        self.validate()
        self._owns_pipeline = self.pipeline is None
        if self.pipeline is None:
            self.pipeline = self.build_pipeline()

    def close(self) -> None:
        """Close the pipeline (and engine) these options built; an injected pipeline belongs to its caller."""
        if self._owns_pipeline and self.pipeline is not None:
            self.pipeline.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def policy_for(self, inputs: Any) -> str:
        """The error policy for one load: on_error, or by default "raise" for one file, "page" for several."""
        return resolve_on_error(self.on_error, inputs)

    def validate(self) -> None:
        """The adapter-level options (the pipeline validates the rest against the model's spec)."""
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.on_error is not None and self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR} or None, got {self.on_error!r}")
        if self.on_suspect not in ON_SUSPECT:
            raise ValueError(f"on_suspect must be one of {ON_SUSPECT}, got {self.on_suspect!r}")
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")

    def build_pipeline(self, *, extract_figures: bool | None = None) -> OCRPipeline:
        """The pipeline these options describe (validates mode, task and settings against the model). Works on
        any object with these attributes (the LlamaIndex reader calls it on itself)."""
        engine: Any = self.engine
        if engine is None or isinstance(engine, str):
            engine = EngineSettings(self.model, self.device, engine or "local", self.base_url, self.api_key,
                                    dict(self.engine_options or {}))
        ocr = OCRSettings(self.task, self.prompt, self.locate_text, self.mode, self.max_crops, self.max_new_tokens,
                          self.ngram_size, self.window_size, pages_per_pass=self.pages_per_pass)
        figures = self.figures_dir is not None if extract_figures is None else extract_figures
        return OCRPipeline(engine, ocr=ocr, render=RenderSettings(dpi=self.dpi),
                           output=OutputSettings(self.table_format, figures), on_error=self.on_error, cache=self.cache,
                           on_suspect="retry" if self.on_suspect == "retry" else "keep")

    def kept(self, results: Iterable[PageResult]) -> Iterator[PageResult]:
        """Results in order, without the suspect or bad pages when on_suspect="drop" (each dropped page is logged)."""
        for r in results:
            if self.on_suspect == "drop" and r.quality is not None and r.quality.verdict != "good":
                logger.warning("%s page %d dropped: quality %s (%s)", r.source, r.page + 1, r.quality.verdict,
                               "; ".join(r.quality.reasons))
                continue
            yield r

    def chunks(self, pages: list[PageResult]) -> list[Chunk]:
        return chunk_pages(pages, chunk_tokens=self.chunk_tokens, drop_headers_footers=self.drop_headers_footers)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
