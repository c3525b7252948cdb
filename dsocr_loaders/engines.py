"""Engines turn page images into raw model text. The pipeline needs only `submit` -> Future.

`LocalEngine` runs dsocr_model in this process (model id or path, CUDA when available, else CPU),
loading lazily so that building a loader or pickling it costs nothing. Any object with `identity`
(names the model, for cache keys) and `submit(OCRRequest) -> Future[OCRResponse]` is an engine: tests
inject fakes; `remote.OpenAIEngine` sends pages to a vLLM/SGLang server. `make_engine` picks one by name.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .tasks import TABLE_TOKENS

logger = logging.getLogger(__name__)
DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"


@dataclass
class OCRRequest:
    image: Any  # PIL RGB page image
    prompt: str  # with one "<image>"
    mode: str = "gundam"
    max_crops: int = 6
    max_new_tokens: int = 8192
    ngram_size: int | None = 20
    window_size: int = 50
    whitelist: tuple[int, ...] = TABLE_TOKENS


@dataclass
class OCRResponse:
    text: str  # raw model text, special tokens kept, EOS removed
    finish_reason: str  # "eos" | "length"
    text_tokens: int | None = None  # generated ids, EOS included
    timings: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class OCREngine(Protocol):
    identity: str

    def submit(self, request: OCRRequest) -> Future: ...


def checkpoint_identity(model: str, revision: str | None = None) -> str:
    """Names the weights for cache keys and document ids, without loading torch or the network.

    A local directory: its path plus a digest of config.json and the checkpoint files' names and sizes, so
    weights saved again under the same path are another model. A hub id: `id@commit` of the snapshot in the
    Hugging Face cache, so a new upstream revision is another model; `id@revision` before the first download.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
            h.update(f"{f.name}:{f.stat().st_size};".encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
        return f"{path.resolve()}#{h.hexdigest()[:12]}"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision)
        if isinstance(found, str):
            return f"{model}@{Path(found).parent.name}"  # .../snapshots/<commit>/config.json
    except Exception as e:  # not an id the hub cache understands: the name alone then
        logger.debug("no hub cache entry for %s: %s", model, e)
    return f"{model}@{revision or 'main'}"


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
        max_batch: pages decoded together (default: from free GPU memory; 4 on CPU).
        max_seq_len: prompt + output tokens per page (default: the model's 8192, as vLLM's max_model_len).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: Any = None,
                 max_batch: int | None = None, max_seq_len: int | None = None, preprocess_workers: int = 4,
                 revision: str | None = None) -> None:
        self.model_name, self.device, self.dtype, self.revision = str(model), device, dtype, revision
        self.max_batch, self.max_seq_len, self.preprocess_workers = max_batch, max_seq_len, preprocess_workers
        self.identity = f"dsocr_model:{checkpoint_identity(self.model_name, revision)}"
        self._lock = threading.Lock()
        self._model = self._engine = self._pool = None

    def __getstate__(self) -> dict[str, Any]:  # picklable: the model is reloaded lazily in the new process
        state = self.__dict__.copy()
        state.update(_lock=None, _model=None, _engine=None, _pool=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def load(self) -> "LocalEngine":
        with self._lock:
            if self._engine is None:
                from dsocr_model import DeepseekOCR
                from dsocr_model.engine import Engine

                device = resolve_device(self.device)
                model = DeepseekOCR.from_pretrained(self.model_name, device=device, dtype=self.dtype,
                                                    revision=self.revision)
                max_batch = self.max_batch or (4 if device == "cpu" else None)
                self._engine = Engine(model, max_batch=max_batch, max_seq_len=self.max_seq_len)
                self._pool = ThreadPoolExecutor(self.preprocess_workers, thread_name_prefix="dsocr-preprocess")
                self._model = model
        return self

    @property
    def max_in_flight(self) -> int:
        """Pages worth keeping submitted: enough to refill every slot, few enough to bound host memory.
        Before the model is loaded (e.g. every page so far came from the cache) a small default."""
        if self._engine is None:
            return 32
        return self._engine.max_batch + self._engine.max_prefill_pages

    def submit(self, request: OCRRequest) -> Future:
        self.load()
        result: Future = Future()
        self._pool.submit(self._prepare, request, result)
        return result

    def _prepare(self, request: OCRRequest, result: Future) -> None:
        from dsocr_model import preprocess_image
        from dsocr_model.engine import PageRequest

        try:
            t0 = time.perf_counter()
            views = preprocess_image(request.image, request.mode, request.max_crops)
            ids = self._model.build_input_ids(request.prompt, [views])
            room = self._engine.max_seq_len - len(ids)
            if room < 1:
                raise ValueError(f"the prompt takes {len(ids)} of {self._engine.max_seq_len} tokens: no room to answer")
            page = PageRequest(ids, [views], min(request.max_new_tokens, room), request.ngram_size,
                               request.window_size if request.ngram_size else None, request.whitelist)
            t_pre = time.perf_counter() - t0
            inner = self._engine.submit(page)
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
                                          {"preprocess_s": t_pre, **out.timings}))
        except Exception as e:
            result.set_exception(e)


def make_engine(engine: Any = None, *, model: str = DEFAULT_MODEL, device: str = "auto", base_url: str | None = None,
                api_key: str | None = None, **options: Any) -> OCREngine:
    """An engine by name: None or "local" runs `model` here; "openai" calls the server at `base_url` (default
    $DSOCR_BASE_URL) serving `model`; any engine object is used as it is. `options` go to the engine class."""
    if engine is None or engine == "local":
        return LocalEngine(model, device=device, **options)
    if engine == "openai":
        from .remote import OpenAIEngine

        base_url = base_url or os.environ.get("DSOCR_BASE_URL")
        if not base_url:
            raise ValueError('engine="openai" needs base_url= (e.g. "http://localhost:8000/v1") or $DSOCR_BASE_URL')
        return OpenAIEngine(base_url, model=model, api_key=api_key, **options)
    if isinstance(engine, str):
        raise ValueError(f"unknown engine {engine!r}; use 'local', 'openai' or an engine object")
    if not isinstance(engine, OCREngine):
        raise TypeError(f"engine needs `identity` and `submit(OCRRequest) -> Future`; got {type(engine).__name__}")
    return engine
