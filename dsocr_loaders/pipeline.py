"""OCRPipeline: source -> pages -> engine -> PageResults, the one object the adapters and the CLI call.

Pages render lazily and at most `max_in_flight` are submitted at once, so memory stays bounded on any
document length while the engine stays full; results come back in page order. Nothing asked for is
dropped: a page that fails to render or to run becomes a PageResult with status "error".
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Union

from .cache import ResultCache, page_key
from .engines import DEFAULT_MODEL, OCREngine, OCRRequest, make_engine
from .errors import DsocrInputError
from .grounding import parse_page
from .results import PageResult
from .sources import DEFAULT_DPI, PageImage, Pages, Source, iter_documents, parse_pages
from .tasks import OCRSettings

logger = logging.getLogger(__name__)
Item = Union[PageImage, PageResult]  # a rendered page, or a page that already failed


class OCRPipeline:
    """Run DeepSeek-OCR over PDFs and images.

    Args:
        model: hub id or local checkpoint directory for the default local engine.
        device: "auto" | "cuda" | "cpu" for the local engine.
        engine: None or "local" (run `model` here), "openai" (a vLLM/SGLang/OpenAI-compatible server at
            `base_url`, serving `model`; api key from `api_key` or $DSOCR_API_KEY / $OPENAI_API_KEY), or any
            OCREngine object (shared, remote or fake).
        engine_options: more keyword arguments for the engine class (e.g. concurrency=16, timeout=300).
        task: "markdown" (default) | "ocr" | "free_ocr" | "figure" | "describe" | "locate".
        prompt: a raw prompt with one "<image>" instead of a task.
        locate_text: what to find for task="locate".
        mode: "tiny" | "small" | "base" | "large" | "gundam" (default) | "gundam-m".
        max_crops, max_new_tokens, ngram_size, window_size: official defaults 6, 8192, 20, 50.
        dpi: PDF rendering resolution (official: 144).
        table_format: "html" (as written by the model) | "markdown".
        extract_figures: crop `image` blocks from the page into Element.image.
        on_error: "raise" a typed error for a source that cannot be opened, or "page": report it as an
            error PageResult and go on with the next source.
        max_in_flight: pages submitted ahead of the one being returned (default from the engine).
        cache: None/False (off), True (the user cache dir), a path to a sqlite file, or a ResultCache:
            pages whose pixels, settings and model were seen before are not OCR'd again.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", engine: OCREngine | str | None = None,
                 base_url: str | None = None, api_key: str | None = None, engine_options: dict | None = None,
                 task: str = "markdown", prompt: str | None = None, locate_text: str | None = None,
                 mode: str = "gundam", max_crops: int = 6, max_new_tokens: int = 8192,
                 ngram_size: int | None = 20, window_size: int = 50, dpi: float = DEFAULT_DPI,
                 table_format: str = "html", extract_figures: bool = True, on_error: str = "raise",
                 max_in_flight: int | None = None, glob: str = "**/*", cache: Any = None) -> None:
        if on_error not in ("raise", "page"):
            raise ValueError("on_error must be 'raise' or 'page'")
        if table_format not in ("html", "markdown"):
            raise ValueError("table_format must be 'html' or 'markdown'")
        self.settings = settings = OCRSettings(task=task, prompt=prompt, locate_text=locate_text, mode=mode,
                                    max_crops=max_crops, max_new_tokens=max_new_tokens, ngram_size=ngram_size,
                                    window_size=window_size)
        self._settings_key = settings.key()  # settings are frozen: hash them once, not per page
        # engines are cheap to build (the local one loads its model on the first page)
        self.engine = make_engine(engine, model=model, device=device, base_url=base_url, api_key=api_key,
                                  **(engine_options or {}))
        self.dpi, self.table_format, self.extract_figures = dpi, table_format, extract_figures
        self.on_error, self.max_in_flight, self.glob = on_error, max_in_flight, glob
        self.cache = _open_cache(cache)

    # ---- public API ------------------------------------------------------------------------------
    def run(self, source: Source, pages: Pages = None, password: str | None = None) -> Iterator[PageResult]:
        """PageResults for every selected page of every input in `source`, in order.

        `pages`: "1-3,7" (1-based, as in a print dialog) or 0-based ints; None for all.
        """
        return self.run_pages(self.iter_pages(source, pages, password))

    async def arun(self, source: Source, pages: Pages = None, password: str | None = None) -> AsyncIterator[PageResult]:
        """`run` without blocking the event loop (rendering and waiting happen in a thread)."""
        it = self.run(source, pages, password)
        done = object()
        while (result := await asyncio.to_thread(next, it, done)) is not done:
            yield result

    def iter_pages(self, source: Source, pages: Pages = None, password: str | None = None) -> Iterator[Item]:
        """Rendered pages, lazily; a source that cannot be opened raises or becomes an error page."""
        for name, doc in iter_documents(source, password=password, dpi=self.dpi, glob=self.glob):
            try:
                if isinstance(doc, DsocrInputError):
                    raise doc
                selection = parse_pages(pages, doc.total_pages, name)
            except DsocrInputError as e:
                if self.on_error == "raise":
                    raise
                logger.warning("%s", e)
                yield PageResult(page=0, status="error", error=f"{type(e).__name__}: {e}", source=name)
                continue
            try:
                yield from doc.pages(selection)
            finally:
                doc.close()

    def run_pages(self, items: Iterable[Item]) -> Iterator[PageResult]:
        """Submit pages ahead (bounded window) and yield their results in order."""
        window: deque[tuple[Item, Any, str | None]] = deque()
        for item in items:
            window.append((item, *self._submit(item)))
            # read each time: a lazily loaded engine knows its batch size only once loaded
            limit = self.max_in_flight or getattr(self.engine, "max_in_flight", 32)
            while len(window) >= limit:
                yield self._result(*window.popleft())
        while window:
            yield self._result(*window.popleft())

    # ---- internals -------------------------------------------------------------------------------
    def _submit(self, item: Item) -> tuple[Any, str | None]:
        """(future or the exception raised on submit, cache key to store the answer under)."""
        if isinstance(item, PageResult) or item.error:
            return None, None
        s = self.settings
        key = None
        if self.cache is not None and self.cache.enabled:
            key = page_key(item.image, self._settings_key, self._engine_identity)
            hit = self.cache.get(key)
            if hit is not None:
                done: Future = Future()
                done.set_result(hit)
                return done, None
        try:
            return self.engine.submit(OCRRequest(item.image, s.resolved_prompt(), s.mode, s.max_crops,
                                                 s.max_new_tokens, s.ngram_size, s.window_size, s.whitelist)), key
        except Exception as e:  # e.g. an engine that refuses the request up front
            return e, None

    @property
    def _engine_identity(self) -> str:
        return getattr(self.engine, "identity", type(self.engine).__name__)

    def _result(self, item: Item, future: Any, cache_key: str | None) -> PageResult:
        if isinstance(item, PageResult):
            return item
        if item.error:
            return self._decorate(PageResult(page=item.page, status="error", error=item.error), item)
        try:
            if isinstance(future, Exception):
                raise future
            response = future.result()
            if cache_key is not None:
                self.cache.put(cache_key, response)  # committed before the caller sees the page
            t0 = time.perf_counter()
            result = parse_page(response.text, item.width, item.height, item.unit, page=item.page,
                                image=item.image if self.extract_figures else None,
                                finish_reason=response.finish_reason, table_format=self.table_format)
            result.text_tokens = response.text_tokens
            result.timings.update(response.timings)
            result.timings["parse_s"] = time.perf_counter() - t0
        except Exception as e:
            logger.warning("%s page %d failed: %s", item.source, item.page, e)
            result = PageResult(page=item.page, status="error", error=f"{type(e).__name__}: {e}")
        return self._decorate(result, item)

    def _decorate(self, result: PageResult, item: PageImage) -> PageResult:
        from dsocr_model.modes import image_token_count, valid_vision_tokens

        s = self.settings
        result.source, result.page_label, result.total_pages = item.source, item.page_label, item.total_pages
        result.width, result.height, result.unit = item.width, item.height, item.unit
        result.doc_metadata = item.doc_metadata
        result.timings["render_s"] = item.render_s
        if item.image is not None:
            w, h = item.image.size
            result.vision_tokens = image_token_count(w, h, s.mode, s.max_crops)
            result.valid_vision_tokens = valid_vision_tokens(w, h, s.mode, s.max_crops)
        result.settings = {"task": s.task if s.prompt is None else "prompt", "mode": s.mode,
                           "model": self._engine_identity, "settings_key": self._settings_key}
        return result


def _open_cache(cache: Any) -> ResultCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, ResultCache):
        return cache
    return ResultCache(None if cache is True else cache)
