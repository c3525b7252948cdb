"""Engines the Ray tests build on the workers (importable there through the cluster's PYTHONPATH)."""
from __future__ import annotations

import os
from concurrent.futures import Future

from dsocr_loaders.ocr.types import OCRResponse


class PoisonEngine:
    """Answers every page, except that a page whose image is `poison_size` kills its worker process outright
    (as a native crash in a PDF library or a CUDA fault would)."""

    identity = "poison-test-engine"

    def __init__(self, poison_size: list[int]) -> None:
        self.poison = tuple(poison_size)

    def submit(self, request) -> Future:
        if tuple(request.image.size) == self.poison:
            os._exit(1)
        done: Future = Future()
        done.set_result(OCRResponse(f"<|ref|>text<|/ref|><|det|>[[10, 10, 500, 60]]<|/det|>\nPage of {request.image.size}",
                                    "eos", 12))
        return done


class SlowEngine:
    """Answers each page after `delay_s` on a thread of its own, and appends the number of pages it holds at that
    moment to `log` (one line per page): how many pages an OCR actor really keeps in flight."""

    identity = "slow-test-engine"

    def __init__(self, delay_s: float, log: str) -> None:
        import threading

        self.delay_s, self.log = delay_s, log
        self._lock, self._held = threading.Lock(), 0

    def submit(self, request) -> Future:
        import threading
        import time

        done: Future = Future()
        with self._lock:
            self._held += 1
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(f"{self._held}\n")

        def answer() -> None:
            time.sleep(self.delay_s)
            with self._lock:
                self._held -= 1
            done.set_result(OCRResponse("<|ref|>text<|/ref|><|det|>[[10, 10, 500, 60]]<|/det|>\nslow page", "eos", 3))

        threading.Thread(target=answer, daemon=True).start()
        return done
