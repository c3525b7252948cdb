"""OCRPipeline: source -> pages -> engine -> PageResults, the one object the adapters and the CLI call.

Pages render lazily and at most `max_in_flight` are submitted at once, so memory stays bounded on any
document length while the engine stays full; results come back in page order. Nothing asked for is
dropped: a page that fails to render or to run becomes a PageResult with status "error". Token counts,
prompts and guard defaults come from the spec of the engine's model.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Union

from dsocr_model.family.deepseek_ocr import DEEPSEEK_OCR
from dsocr_model.family.spec import MAX_GUARD_WINDOW, ModelSpec

from .cache import open_cache, page_key, stored_future
from .engines import make_engine
from .errors import EngineUnavailableError
from .grounding import parse_page
from .multipage import submit_pass
from .quality import Thresholds, assess
from .results import PageResult
from .settings import (DEFAULT_MAX_IN_FLIGHT, DEFAULT_ON_ERROR, DEFAULT_ON_SUSPECT, ON_ERROR, ON_SUSPECT, PASSWORD_HINT,
                       EngineSettings, OCRSettings, OutputSettings, RenderSettings)
from .sources import PageImage, Pages, Source, render_pages
from .types import OCREngine, OCRRequest, OCRResponse

logger = logging.getLogger(__name__)
Item = Union[PageImage, PageResult]  # a rendered page, or a page that already failed


class OCRPipeline:
    """Run DeepSeek-OCR over PDFs and images.

    Args:
        engine: an engine object (LocalEngine, OpenAIEngine, a shared or fake one), or EngineSettings for
            the default one, built on the first page that needs it (default: the local engine with
            deepseek-ai/DeepSeek-OCR). Rendering pages never builds it.
        ocr: OCRSettings (task, prompt, mode, tile cap, token limit, n-gram guard); None fields are the
            model's own defaults, read from its spec.
        render: RenderSettings (PDF dpi, folder glob).
        output: OutputSettings (table format, figure crops).
        on_error: for a source that cannot be opened: "raise" its typed error, "page" (report it as one error
            PageResult naming the file and go on), "skip" (log it and go on); None (default): "raise" for one
            input, "page" for a folder or a list. Engine failures (EngineUnavailableError: the model cannot
            be loaded, the server is unreachable or refuses the key) always raise, at once.
        max_in_flight: pages submitted ahead of the one being returned (default from the engine).
        cache: None/False (off), True (the user cache dir), a path to a sqlite file, or a ResultCache:
            pages whose pixels, settings and model were seen before are not OCR'd again.
        on_suspect: what to do with a page whose quality verdict is not "good" (see quality.py): "keep" it as it
            is (default), "retry" it once with a stricter n-gram guard and keep the better-scoring answer, or
            "drop" it (the adapters leave it out, with a warning; here it stays a PageResult, never dropped).
        thresholds: the verdict's thresholds (quality.Thresholds).
    """

    def __init__(self, engine: OCREngine | EngineSettings | None = None, *, ocr: OCRSettings | None = None,
                 render: RenderSettings | None = None, output: OutputSettings | None = None,
                 on_error: str | None = DEFAULT_ON_ERROR, max_in_flight: int | None = None, cache: Any = None,
                 on_suspect: str = DEFAULT_ON_SUSPECT, thresholds: Thresholds | None = None) -> None:
        if on_error is not None and on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR} or None, got {on_error!r}")
        if on_suspect not in ON_SUSPECT:
            raise ValueError(f"on_suspect must be one of {ON_SUSPECT}, got {on_suspect!r}")
        self.on_suspect, self.thresholds = on_suspect, thresholds or Thresholds()
        self._owns_engine = engine is None or isinstance(engine, EngineSettings)  # close() closes only its own
        if self._owns_engine:
            self._engine_settings, self._engine = engine or EngineSettings(), None
            self.spec: ModelSpec = self._engine_settings.spec()
            if self._engine_settings.engine == "openai":
                self._engine = make_engine(self._engine_settings)  # fail now on a bad base_url, not at page 1
        else:
            self._engine_settings, self._engine = None, make_engine(engine)
            self.spec = getattr(engine, "spec", None) or DEEPSEEK_OCR
        self.settings = (ocr or OCRSettings()).resolve(self.spec)  # a mode or task the model lacks fails here
        self._pass_guard = (ocr or OCRSettings()).pass_guard(self.spec) if self.settings.pages_per_pass > 1 else None
        self._settings_key = self.settings.key()  # settings are frozen: hash them once, not per page
        self.render, self.output = render or RenderSettings(), output or OutputSettings()
        self.on_error, self.max_in_flight = on_error, max_in_flight
        self.cache = open_cache(cache)

    @property
    def engine(self) -> OCREngine:
        if self._engine is None:
            self._engine = make_engine(self._engine_settings)
        return self._engine

    def close(self) -> None:
        """Close the engine this pipeline built (an injected engine belongs to its caller)."""
        if self._owns_engine and self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()
        self._engine = None if self._owns_engine else self._engine

    def __enter__(self) -> "OCRPipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- public API ------------------------------------------------------------------------------
    def run(self, source: Source, pages: Pages = None, password: str | None = None, **options: Any) -> Iterator[PageResult]:
        """PageResults for every selected page of every input in `source`, in order.

        `pages`: "1-3,7" (1-based, as in a print dialog) or 0-based ints; None for all. `options`: those of
        `iter_pages` (on_error for this call, name of a bytes source, password_hint).
        """
        return self.run_pages(self.iter_pages(source, pages, password, **options))

    async def arun(self, source: Source, pages: Pages = None, password: str | None = None,
                   **options: Any) -> AsyncIterator[PageResult]:
        """`run` without blocking the event loop (rendering and waiting happen in a thread)."""
        it = self.run(source, pages, password, **options)
        done = object()
        while (result := await asyncio.to_thread(next, it, done)) is not done:
            yield result

    def iter_pages(self, source: Source, pages: Pages = None, password: str | None = None, *,
                   on_error: str | None = None, name: str | None = None, password_hint: str = PASSWORD_HINT,
                   several: bool | None = None) -> Iterator[Item]:
        """Rendered pages, lazily (no engine needed); see `sources.render_pages` for the error policy."""
        return render_pages(source, pages, password=password, dpi=self.render.dpi, glob=self.render.glob,
                            on_error=on_error or self.on_error, name=name, password_hint=password_hint,
                            several=several)

    def run_pages(self, items: Iterable[Item]) -> Iterator[PageResult]:
        """Submit pages ahead (bounded window) and yield their results in order."""
        window: deque[tuple[Item, Any]] = deque()
        try:
            for group in self._passes(items):
                window.extend(zip((item for item, _ in group), self._submit(group)))
                # read each time: a lazily loaded engine knows its batch size only once loaded
                limit = self.max_in_flight or getattr(self._engine, "max_in_flight", DEFAULT_MAX_IN_FLIGHT)
                while len(window) >= limit:
                    yield self._result(*window.popleft())
            while window:
                yield self._result(*window.popleft())
        finally:  # an engine failure or a caller that stops early: drop what is still queued
            for _, future in window:
                if isinstance(future, Future):
                    future.cancel()

    @property
    def engine_identity(self) -> str:
        """Names the model for cache keys and document ids."""
        return getattr(self.engine, "identity", type(self.engine).__name__)

    # ---- internals -------------------------------------------------------------------------------
    def _passes(self, items: Iterable[Item]) -> Iterator[list[tuple[Item, Any]]]:
        """(item, cache key or cached answer) groups: one page each, or with pages_per_pass > 1 up to that many
        consecutive pages of one source that still need the model (failed and cached pages go alone)."""
        n = self.settings.pages_per_pass
        group: list[tuple[Item, Any]] = []
        for item in items:
            lookup = self._lookup(item)
            joins = n > 1 and not isinstance(item, PageResult) and not item.error and not isinstance(lookup, Future)
            if group and (not joins or len(group) == n or item.source != group[0][0].source):
                yield group
                group = []
            if joins:
                group.append((item, lookup))
            else:
                yield [(item, lookup)]
        if group:
            yield group

    def _lookup(self, item: Item) -> Any:
        """The page's cache key (str), its cached answer (a done Future), or None (failed page, no cache)."""
        if isinstance(item, PageResult) or item.error or self.cache is None or not self.cache.enabled:
            return None
        key = page_key(item.image, self._settings_key, self.engine_identity)
        hit = self.cache.get(key)
        if hit is None:
            return key
        done: Future = Future()
        done.set_result(hit)
        return done

    def _submit(self, group: list[tuple[Item, Any]]) -> list[Any]:
        """Each page's future (answered from the cache, or by the engine), or the exception raised on submit.
        A fresh answer is written to the cache as soon as it arrives, not when its turn to be yielded comes,
        so a kill loses no finished page, even one behind a slow page."""
        item, lookup = group[0]
        if len(group) == 1 and (isinstance(item, PageResult) or item.error or isinstance(lookup, Future)):
            return [lookup]
        s = self.settings
        single = OCRRequest(item.image, s.prompt, s.mode, s.max_crops, s.max_new_tokens, s.ngram_size,
                            s.window_size, s.whitelist)
        try:
            if len(group) == 1:
                futures = [self.engine.submit(single)]
            else:
                n, w, wl = self._pass_guard
                request = OCRRequest(None, self.spec.multi_page_prompt_for(len(group)), self.spec.multi_page_mode,
                                     s.max_crops, s.max_new_tokens, n or 0, w, wl)
                futures = submit_pass(self.engine, [i.image for i, _ in group], request, single, self.spec.page_marker)
        except EngineUnavailableError:
            raise
        except Exception as e:  # e.g. an engine that refuses the request up front
            return [e] * len(group)
        return [f if key is None else stored_future(f, self.cache, key) for f, (_, key) in zip(futures, group)]

    def _result(self, item: Item, future: Any) -> PageResult:
        if isinstance(item, PageResult):
            return item
        if item.error:
            return self._decorate(PageResult(page=item.page, status="error", error=item.error,
                                             error_type="RenderError"), item)
        try:
            if isinstance(future, Exception):
                raise future
            result = self._parse(item, future.result())
            if self.on_suspect == "retry" and result.quality.verdict != "good":
                result = self._retry(item, result)
        except EngineUnavailableError:
            raise
        except Exception as e:
            logger.warning("%s page %d failed: %s: %s", item.source, item.page + 1, type(e).__name__, e)
            result = PageResult(page=item.page, status="error", error=f"{type(e).__name__}: {e}",
                                error_type=type(e).__name__)
        return self._decorate(result, item)

    def _parse(self, item: PageImage, response: OCRResponse) -> PageResult:
        """The engine's answer for a page -> its PageResult with token counts, timings and quality."""
        t0 = time.perf_counter()
        result = parse_page(response.text, item.width, item.height, item.unit, page=item.page,
                            image=item.image if self.output.extract_figures else None,
                            finish_reason=response.finish_reason, table_format=self.output.table_format,
                            box_syntax=self.spec.box_syntax)
        result.text_tokens = response.text_tokens
        result.timings.update(response.timings)
        result.quality = assess(result.markdown, result.status, response.signals, item.text_layer, self.thresholds)
        result.timings["parse_s"] = time.perf_counter() - t0
        return result

    def _retry(self, item: PageImage, first: PageResult) -> PageResult:
        """Read a suspect page once more with a stricter guard (half the n-gram, twice the window); the better
        verdict wins (ties: less repetition, then the higher mean log-probability)."""
        s = self.settings
        n = max(3, (s.ngram_size or 40) // 2)
        w = min(MAX_GUARD_WINDOW, max(2 * (s.window_size or 64), 128))
        request = OCRRequest(item.image, s.prompt, s.mode, s.max_crops, s.max_new_tokens, n, w, s.whitelist)
        try:
            response = self.engine.submit(request).result()
        except EngineUnavailableError:
            raise
        except Exception as e:
            logger.warning("%s page %d: retry failed, keeping the first answer: %s", item.source, item.page + 1, e)
            return first
        second = self._parse(item, response)
        best = min((first, second), key=lambda r: r.quality.rank())
        logger.info("%s page %d: %s page retried with guard %d/%d: %s -> %s, kept the %s", item.source,
                    item.page + 1, first.quality.verdict, n, w, first.quality.verdict, second.quality.verdict,
                    "retry" if best is second else "first answer")
        best.timings["retried"] = 1.0
        return best

    def _decorate(self, result: PageResult, item: PageImage) -> PageResult:
        s = self.settings
        result.source, result.page_label, result.total_pages = item.source, item.page_label, item.total_pages
        result.width, result.height, result.unit = item.width, item.height, item.unit
        result.doc_metadata = item.doc_metadata
        result.timings["render_s"] = item.render_s
        in_pass = result.timings.get("pass_pages", 1) > 1  # read with other pages, in the multi-page mode
        mode = self.spec.multi_page_mode if in_pass else s.mode
        if item.image is not None:
            w, h = item.image.size
            result.vision_tokens = self.spec.image_token_count(w, h, mode, s.max_crops)
            result.valid_vision_tokens = self.spec.valid_vision_tokens(w, h, mode, s.max_crops)
        result.settings = {"task": s.task, "mode": mode, "model": self.engine_identity,
                           "settings_key": self._settings_key}
        if in_pass:
            result.settings["pages_per_pass"] = int(result.timings["pass_pages"])
        return result
