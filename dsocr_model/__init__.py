"""dsocr_model: the DeepSeek-OCR family in PyTorch, loading the official checkpoints unchanged.

Layers, each importing only those below it: `family` (torch-free specs, tile geometry, the architecture
registry) -> `modeling` (torch modules, preprocessing, tokenizer, weights) -> `runtime` (generation and
the batched engine). Exports resolve lazily (PEP 562) so the torch-free parts load without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelSpec": "family.spec", "Mode": "family.spec", "Guard": "family.spec",
    "DEEPSEEK_OCR": "family.deepseek_ocr", "count_image_tokens": "family.deepseek_ocr",
    "Architecture": "family.registry", "register": "family.registry", "architecture_for": "family.registry",
    "spec_for": "family.registry", "DEFAULT_MODEL_ID": "family.registry",
    "UnknownArchitectureError": "family.registry",
    "DeepseekOCR": "modeling.model", "ImageViews": "modeling.preprocess", "preprocess_image": "modeling.preprocess",
    "OCRConfig": "modeling.config", "DecoderConfig": "modeling.config", "SamConfig": "modeling.config",
    "ClipConfig": "modeling.config", "CheckpointError": "modeling.weights", "ModelNotFoundError": "modeling.weights",
    "generate": "runtime.generate", "Generation": "runtime.generate", "banned_ngram_tokens": "runtime.ngram",
    "Engine": "runtime.engine", "PageRequest": "runtime.batch", "PageOutput": "runtime.batch",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import package_version

        return package_version()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsocr_model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
