"""dsocr_loaders: DeepSeek-OCR for RAG. Sources -> pages -> engine -> PageResults -> Documents.

Exports resolve lazily (PEP 562): importing this package loads neither torch nor any framework.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OCRPipeline": "pipeline", "PageResult": "results", "Element": "results", "parse_page": "grounding",
    "OCRSettings": "tasks", "TASK_PROMPTS": "tasks", "build_prompt": "tasks",
    "OCREngine": "engines", "OCRRequest": "engines", "OCRResponse": "engines", "LocalEngine": "engines",
    "parse_pages": "sources", "PageImage": "sources",
    "DsocrInputError": "errors", "UnsupportedFormatError": "errors", "EmptyInputError": "errors",
    "CorruptFileError": "errors", "PasswordError": "errors", "PageRangeError": "errors", "ResultCache": "cache",
    "TooLargeError": "errors", "RemoteEngineError": "errors", "OpenAIEngine": "remote", "make_engine": "engines",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsocr_loaders' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
