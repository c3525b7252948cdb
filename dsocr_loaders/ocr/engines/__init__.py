"""Engines turn page images into raw model text; the pipeline needs only `submit(OCRRequest) -> Future`.

`LocalEngine` runs the model here; `OpenAIEngine` sends pages to an OpenAI-compatible server (vLLM,
SGLang, Ollama). Any object with `identity` and `submit` is an engine (tests inject fakes).
"""
from __future__ import annotations

import os

from ..settings import EngineSettings
from ..types import OCREngine
from .identity import checkpoint_identity, local_identity
from .local import LocalEngine, resolve_device
from .openai import OpenAIEngine

__all__ = ["LocalEngine", "OpenAIEngine", "make_engine", "checkpoint_identity", "local_identity", "resolve_device"]


def make_engine(settings: EngineSettings | OCREngine | None = None) -> OCREngine:
    """The engine `settings` describe ("local" runs its model here; "openai" calls the server at `base_url`,
    default $DSOCR_BASE_URL); an engine object is used as it is."""
    if settings is None:
        settings = EngineSettings()
    if not isinstance(settings, EngineSettings):
        if not isinstance(settings, OCREngine):
            raise TypeError(f"engine needs `identity` and `submit(OCRRequest) -> Future`; got {type(settings).__name__}")
        return settings
    if settings.engine == "openai":
        base_url = settings.base_url or os.environ.get("DSOCR_BASE_URL")
        if not base_url:
            raise ValueError('engine="openai" needs base_url= (e.g. "http://localhost:8000/v1") or $DSOCR_BASE_URL')
        return OpenAIEngine(base_url, model=settings.model, api_key=settings.api_key, **settings.options)
    return LocalEngine(settings.model, device=settings.device, **settings.options)
