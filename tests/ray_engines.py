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
