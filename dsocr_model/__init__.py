"""dsocr_model: a faithful PyTorch DeepSeek-OCR that loads the official checkpoint unchanged.

Exports resolve lazily (PEP 562) so `dsocr_model.modes` and `dsocr_model.weights` helpers can be used
without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeepseekOCR": "model", "Generation": "generate", "banned_ngram_tokens": "ngram",
    "ImageViews": "preprocess", "preprocess_image": "preprocess", "MODES": "modes",
    "count_image_tokens": "modes", "OCRConfig": "config", "DecoderConfig": "config", "SamConfig": "config",
    "ClipConfig": "config", "CheckpointError": "weights", "ModelNotFoundError": "weights",
    "DEFAULT_MODEL_ID": "weights", "Engine": "engine", "PageRequest": "engine", "PageOutput": "engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsocr_model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
