"""LocalEngine: the model in this process (hub id or checkpoint directory, CUDA when available, else CPU).

It loads lazily, so building a loader or pickling it costs nothing; preprocessing runs in worker threads
and pages go to the batched `dsocr_model.runtime` engine. Engines for the same weights share one loaded
model (shared.py). Its `spec` (modes, prompts, guard) comes from the checkpoint's config.json without
loading torch; its `identity` names the weights by content (a hub id by the commit it resolves to, fetched
before the first page). A model that cannot be fetched or loaded raises EngineUnavailableError.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dsocr_model.family.registry import spec_for

from ..errors import EngineUnavailableError
from ..settings import DEFAULT_DEVICE, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MODEL
from ..types import OCRRequest, OCRResponse
from . import shared
from .identity import local_identity

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalEngine:
    """dsocr_model in-process: continuous batching over many pages, preprocessing in worker threads.

    Args:
        model: hub id or local directory of the official checkpoint.
        revision: hub branch, tag or commit (default: main).
        device: "auto" (CUDA when available, else CPU), "cuda", "cuda:1", "cpu".
        dtype: torch dtype; default bf16 on CUDA, fp32 on CPU.
        max_batch: pages decoded together (default: the runtime's memory plan; a small batch on CPU).
        max_seq_len: prompt + output tokens per page (default: the model's 8192, as vLLM's max_model_len).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = DEFAULT_DEVICE, dtype: Any = None,
                 max_batch: int | None = None, max_seq_len: int | None = None, preprocess_workers: int = 4,
                 revision: str | None = None) -> None:
        self.model_name, self.device, self.dtype, self.revision = str(model), device, dtype, revision
        self.max_batch, self.max_seq_len, self.preprocess_workers = max_batch, max_seq_len, preprocess_workers
        self.spec = spec_for(self.model_name, revision)
        self._identity: str | None = None
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model = self._engine = self._pool = None
        self.load_s: float | None = None  # seconds this engine waited for its model (None: not loaded yet)

    def __getstate__(self) -> dict[str, Any]:  # picklable: the model is reloaded lazily in the new process
        state = self.__dict__.copy()
        state.update(_lock=None, _key=None, _model=None, _engine=None, _pool=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """The weights, by content; a hub id is resolved to its commit first (EngineUnavailableError if it
        can be neither fetched nor found in the cache)."""
        if self._identity is None:
            try:
                self._identity = local_identity(self.model_name, self.revision)
            except Exception as e:
                raise EngineUnavailableError(f"cannot resolve the model {self.model_name!r}: {e}") from e
        return self._identity

    def load(self) -> "LocalEngine":
        with self._lock:
            if self._engine is None:
                t0 = time.perf_counter()
                device = resolve_device(self.device)
                key = (self.model_name, self.revision, device, str(self.dtype), self.max_batch, self.max_seq_len,
                       self.preprocess_workers)
                runtime = shared.acquire(key, lambda: self._build(device))
                self._key, self._model, self._engine, self._pool = key, runtime.model, runtime.engine, runtime.pool
                self.spec = runtime.model.spec
                self.load_s = time.perf_counter() - t0
        return self

    def _build(self, device: str) -> shared.Runtime:
        from dsocr_model.modeling.model import DeepseekOCR
        from dsocr_model.runtime.engine import Engine

        t0 = time.perf_counter()
        logger.info("loading %s on %s (dtype %s; a hub id downloads once, with progress bars)", self.model_name,
                    device, self.dtype or "default")
        try:
            model = DeepseekOCR.from_pretrained(self.model_name, device=device, dtype=self.dtype, revision=self.revision)
        except (OSError, ValueError, RuntimeError) as e:  # not found, not fetchable, not matching: no page can run
            raise EngineUnavailableError(f"cannot load the model {self.model_name!r}: {type(e).__name__}: {e}") from e
        engine = Engine(model, max_batch=self.max_batch, max_seq_len=self.max_seq_len)
        logger.info("loaded %s on %s in %.1f s", self.model_name, device, time.perf_counter() - t0)
        return shared.Runtime(model, engine, ThreadPoolExecutor(self.preprocess_workers,
                                                                thread_name_prefix="dsocr-preprocess"))

    def close(self) -> None:
        """Give back this engine's share of the loaded model (the last one frees it)."""
        with self._lock:
            key, self._key = self._key, None
            self._model = self._engine = self._pool = None
        if key is not None:
            shared.release(key)

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def max_in_flight(self) -> int:
        """Pages worth keeping submitted: enough to refill every slot, few enough to bound host memory.
        Before the model is loaded (e.g. every page so far came from the cache) a small default."""
        if self._engine is None:
            return DEFAULT_MAX_IN_FLIGHT
        return self._engine.max_batch + self._engine.max_prefill_pages

    def submit(self, request: OCRRequest, on_text: Callable[[str], None] | None = None) -> Future:
        """Queue a page; the Future resolves to its OCRResponse. `on_text` (optional) receives the answer's
        text piece by piece as it is decoded (special tokens kept), from the engine's thread."""
        self.load()
        result: Future = Future()
        self._pool.submit(self._prepare, request, result, on_text)
        return result

    def _prepare(self, request: OCRRequest, result: Future, on_text: Callable[[str], None] | None = None) -> None:
        from dsocr_model.modeling.preprocess import preprocess_image
        from dsocr_model.runtime.batch import PageRequest

        try:
            t0 = time.perf_counter()
            request = request.resolve(self.spec)
            # uint8 views: a quarter of the memory while the page waits; the engine normalises them on its device
            views = [preprocess_image(image, request.mode, request.max_crops, self.spec, normalize=False)
                     for image in request.images]
            ids = self._model.build_input_ids(request.prompt, views)
            room = self._engine.max_seq_len - len(ids)
            if room < 1:
                raise ValueError(f"the prompt takes {len(ids)} of {self._engine.max_seq_len} tokens: no room to answer")
            page = PageRequest(ids, views, min(request.max_new_tokens, room), request.ngram_size,
                               request.window_size, request.whitelist)
            t_pre = time.perf_counter() - t0
            inner = self._engine.submit(page, TextPieces(self._model.tokenizer, on_text, self._model.eos_token_id)
                                        if on_text else None)
        except Exception as e:
            result.set_exception(e)
            return
        inner.add_done_callback(lambda f: self._finish(f, result, t_pre))

    def _finish(self, inner: Future, result: Future, t_pre: float) -> None:
        try:
            out = inner.result()
            ids = out.token_ids[:-1] if out.finish_reason == "eos" else out.token_ids
            text = self._model.tokenizer.decode(ids, skip_special_tokens=False)
            result.set_result(OCRResponse(text, out.finish_reason, len(out.token_ids),
                                          {"preprocess_s": t_pre, **out.timings}, dict(out.signals)))
        except Exception as e:
            result.set_exception(e)


class TextPieces:
    """Token ids -> text pieces as they are decoded: a line's ids are decoded together (so multi-byte
    characters and merges come out whole) and what is new is handed on; EOS is not text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None], eos_id: int) -> None:
        self.tokenizer, self.on_text, self.eos_id = tokenizer, on_text, eos_id
        self.ids: list[int] = []
        self.sent = 0

    def __call__(self, token: int) -> None:
        if token == self.eos_id:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):  # half a character: wait for the rest
            return
        if text[self.sent:]:
            self.on_text(text[self.sent:])
        if text.endswith("\n"):  # start the next line afresh: decoding stays short
            self.ids, self.sent = [], 0
        else:
            self.sent = len(text)
