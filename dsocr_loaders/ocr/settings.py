"""One home for defaults: every surface (OCRPipeline, both adapters, the CLI) reads these.

Settings come in groups, each a frozen dataclass: what the engine is (`EngineSettings`), what changes the
model's output (`OCRSettings`, whose `key()` a cache and document ids hash), how pages are rendered
(`RenderSettings`) and how output is shaped (`OutputSettings`). Model-specific defaults (mode, prompts,
n-gram guard, tile cap) are not written here: None means "the model's", read from its ModelSpec.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsocr_model.family.registry import DEFAULT_MODEL_ID, spec_for
from dsocr_model.family.spec import ModelSpec

from .types import DEFAULT_MAX_NEW_TOKENS, resolve_guard

DEFAULT_MODEL = DEFAULT_MODEL_ID
DEFAULT_DEVICE = "auto"  # CUDA when available, else CPU
# Environment variables for the common settings, read when a setting is made (never at import); an explicit
# argument wins. $DSOCR_BASE_URL, $DSOCR_API_KEY and $DSOCR_CACHE_DIR are read by the engines and the cache.
ENV_MODEL, ENV_DEVICE, ENV_MODE = "DSOCR_MODEL", "DSOCR_DEVICE", "DSOCR_MODE"


def default_model() -> str:
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def default_device() -> str:
    return os.environ.get(ENV_DEVICE) or DEFAULT_DEVICE


def default_mode() -> str | None:
    """None: the model's own default mode (its spec)."""
    return os.environ.get(ENV_MODE) or None
DEFAULT_DPI = 144  # official PDF rendering (zoom 2)
PASSWORD_HINT = "password="  # how a password error names the option; the CLI says "--password"
DEFAULT_GLOB = "**/*"
DEFAULT_TABLE_FORMAT = "html"  # as the model writes tables
TABLE_FORMATS = ("html", "markdown")
PAGES_DELIMITER = "\n\f"  # LangChain's PDF loaders' pages_delimiter: a form feed between pages
ON_ERROR = ("raise", "page", "skip")  # for a file that cannot be read: raise, one error result, or log only
DEFAULT_ON_ERROR = None  # "raise" for one input, "page" for a folder or a list
SPLITS = ("page", "single", "elements")
DEFAULT_SPLIT = "page"
ENGINES = ("local", "openai")


@dataclass(frozen=True)
class EngineSettings:
    """The default engine: `engine="local"` runs `model` here; "openai" calls `base_url` serving `model`."""

    model: str = field(default_factory=default_model)
    device: str = field(default_factory=default_device)
    engine: str = "local"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)  # more keywords for the engine class

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; use one of {ENGINES} or pass an engine object")

    def spec(self) -> ModelSpec:
        """The model's spec from its config.json, without loading it (v1 for a hub id not yet downloaded)."""
        return spec_for(self.model)


@dataclass(frozen=True)
class OCRSettings:
    """What changes the model's answer for a page image. None: the model's default (its spec)."""

    task: str | None = None  # markdown | ocr | free_ocr | figure | describe | locate (v1)
    prompt: str | None = None  # a raw prompt with one "<image>" instead of a task
    locate_text: str | None = None  # for task="locate"
    mode: str | None = None  # v1: tiny | small | base | large | gundam (default) | gundam-m
    max_crops: int | None = None  # tile cap (v1: 6)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ngram_size: int | None = None  # the official PDF guard (v1: 20 within 50); 0 turns it off
    window_size: int | None = None
    whitelist: tuple[int, ...] | None = None  # ids the guard never bans (v1: <td>, </td>)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.prompt is not None and self.prompt.count("<image>") != 1:
            raise ValueError("a raw prompt must contain exactly one '<image>' (e.g. '<image>\\nFree OCR.')")

    def resolve(self, spec: ModelSpec) -> "OCRSettings":
        """Every default filled from `spec`; raises ValueError for a mode, task or cap the model lacks."""
        task = self.task or spec.default_task
        prompt = self.prompt if self.prompt is not None else spec.prompt(task, self.locate_text)
        mode = self.mode or default_mode() or spec.default_mode
        spec.mode(mode)
        n, w, wl = resolve_guard(spec, self.ngram_size, self.window_size, self.whitelist)
        crops = spec.check_crops(spec.max_crops if self.max_crops is None else self.max_crops)
        return dataclasses.replace(self, task=task if self.prompt is None else "prompt", prompt=prompt,
                                   mode=mode, max_crops=crops, ngram_size=n or 0,
                                   window_size=w, whitelist=wl)

    def key(self) -> str:
        """A stable digest of everything that changes the model's output (of resolved settings)."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RenderSettings:
    dpi: float = DEFAULT_DPI  # PDF rendering resolution
    glob: str = DEFAULT_GLOB  # which files of a folder are inputs


@dataclass(frozen=True)
class OutputSettings:
    table_format: str = DEFAULT_TABLE_FORMAT  # "html" (as written by the model) | "markdown"
    extract_figures: bool = True  # crop `image` blocks from the page into Element.image

    def __post_init__(self) -> None:
        if self.table_format not in TABLE_FORMATS:
            raise ValueError(f"table_format must be one of {TABLE_FORMATS}, got {self.table_format!r}")
