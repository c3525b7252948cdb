"""dsocr_loaders: DeepSeek-OCR for RAG. Sources -> pages -> engine -> PageResults -> Documents.

Layers: `ocr` (the framework-free core: types, settings, sources, engines, parsing, pipeline, cache, ids)
-> the integrations (`langchain`, `llama_index`) and the apps (`apps.cli`, `apps.layout`). Exports
resolve lazily (PEP 562): importing this package loads neither torch nor any framework.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OCRPipeline": "ocr.pipeline", "PageResult": "ocr.results", "Element": "ocr.results",
    "parse_page": "ocr.grounding", "OCRSettings": "ocr.settings", "EngineSettings": "ocr.settings",
    "RenderSettings": "ocr.settings", "OutputSettings": "ocr.settings", "LoaderOptions": "ocr.options",
    "OCREngine": "ocr.types", "OCRRequest": "ocr.types", "OCRResponse": "ocr.types",
    "LocalEngine": "ocr.engines", "OpenAIEngine": "ocr.engines", "make_engine": "ocr.engines",
    "parse_pages": "ocr.sources", "render_pages": "ocr.sources", "PageImage": "ocr.sources",
    "DsocrInputError": "ocr.errors", "UnsupportedFormatError": "ocr.errors", "EmptyInputError": "ocr.errors",
    "CorruptFileError": "ocr.errors", "PasswordError": "ocr.errors", "PageRangeError": "ocr.errors",
    "TooLargeError": "ocr.errors", "RemoteEngineError": "ocr.errors", "EngineError": "ocr.errors",
    "EngineUnavailableError": "ocr.errors", "ResultCache": "ocr.cache",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from dsocr_model._version import package_version

        return package_version()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsocr_loaders' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
