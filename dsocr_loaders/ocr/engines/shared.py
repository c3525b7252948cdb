"""One loaded model per process: LocalEngines for the same weights, device, dtype and engine shape share
one model, one batching engine and one preprocessing pool, counted by reference.

A user who builds a loader per file in a loop gets the model loaded once; with real weights (6.7 GB, and an
engine that reserves GPU memory for its KV cache) a second copy would not even fit. The last `release`
(LocalEngine.close) frees the model, the engine's worker thread and the pool.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    model: Any  # dsocr_model DeepseekOCR
    engine: Any  # dsocr_model.runtime Engine
    pool: ThreadPoolExecutor  # preprocessing workers
    refs: int = 0


_RUNTIMES: dict[tuple, Runtime] = {}
_LOCK = threading.Lock()  # held while a model loads: a second engine for it waits and shares it


def acquire(key: tuple, build: Callable[[], Runtime]) -> Runtime:
    with _LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = _RUNTIMES[key] = build()
        else:
            logger.debug("sharing the loaded model %s", key)
        runtime.refs += 1
        return runtime


def release(key: tuple) -> None:
    with _LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            return
        runtime.refs -= 1
        if runtime.refs > 0:
            return
        del _RUNTIMES[key]
    runtime.engine.close()
    runtime.pool.shutdown(wait=True)
    if getattr(runtime.model, "device", None) is not None and runtime.model.device.type == "cuda":
        import torch

        del runtime.model, runtime.engine
        torch.cuda.empty_cache()
    logger.info("released the model %s", key[0])


def loaded() -> int:
    """How many models this process holds (tests, diagnostics)."""
    with _LOCK:
        return len(_RUNTIMES)
