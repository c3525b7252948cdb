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
DEFAULT_MAX_IN_FLIGHT = 32  # pages kept submitted to an engine that does not say how many it holds
DEFAULT_DPI = 144  # official PDF rendering (zoom 2)
PASSWORD_HINT = "password="  # how a password error names the option; the CLI says "--password"
DEFAULT_GLOB = "**/*"
DEFAULT_TABLE_FORMAT = "html"  # as the model writes tables
TABLE_FORMATS = ("html", "markdown")
PAGES_DELIMITER = "\n\f"  # LangChain's PDF loaders' pages_delimiter: a form feed between pages
ON_ERROR = ("raise", "page", "skip")  # for a file that cannot be read: raise, one error result, or log only
DEFAULT_ON_ERROR = None  # "raise" for one input, "page" for a folder or a list
SPLITS = ("page", "single", "elements", "chunks")
DEFAULT_CHUNK_TOKENS = 512  # split="chunks": the input limit of common embedders (BGE, E5, MiniLM-class: 512)
ON_SUSPECT = ("keep", "retry", "drop")  # a page whose quality verdict is not "good"
DEFAULT_ON_SUSPECT = "keep"
DEFAULT_SPLIT = "page"
ENGINES = ("local", "openai")
PASS_PROMPT_ALLOWANCE = 32  # BOS and the multi-page instruction's text tokens, generously


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
    pages_per_pass: int = 1  # >1: pages read together in one pass (Unlimited-OCR), split back per page

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.pages_per_pass < 1:
            raise ValueError("pages_per_pass must be >= 1")
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
        if self.pages_per_pass > 1:
            check_pass_budget(spec, self.pages_per_pass, self.max_new_tokens)
            if self.prompt is not None or task != spec.default_task:
                raise ValueError("pages_per_pass > 1 reads pages with the model's multi-page prompt: leave task and "
                                 "prompt at their defaults")
        return dataclasses.replace(self, task=task if self.prompt is None else "prompt", prompt=prompt,
                                   mode=mode, max_crops=crops, ngram_size=n or 0,
                                   window_size=w, whitelist=wl)

    def pass_guard(self, spec: ModelSpec) -> tuple[int | None, int | None, tuple[int, ...]]:
        """The n-gram guard of a multi-page pass: the one asked for, else the spec's multi-page guard
        (Unlimited-OCR: 35 within 1024). Call on unresolved settings (None still means "the model's")."""
        return resolve_guard(dataclasses.replace(spec, document_guard=spec.multi_page_guard), self.ngram_size,
                             self.window_size, self.whitelist)

    def key(self) -> str:
        """A stable digest of everything that changes the model's output (of resolved settings)."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def check_pass_budget(spec: ModelSpec, pages: int, max_new_tokens: int) -> None:
    """Up front: `pages` images in the multi-page mode, the prompt and the answer must fit the context."""
    if not spec.multi_page:
        raise ValueError(f"{spec.name} reads one page per pass: pages_per_pass must be 1 (Unlimited-OCR reads several)")
    per_page = spec.image_token_count(1, 1, spec.multi_page_mode)
    prompt = per_page * pages + PASS_PROMPT_ALLOWANCE
    if prompt + max_new_tokens > spec.context_length:
        fit = (spec.context_length - max_new_tokens - PASS_PROMPT_ALLOWANCE) // per_page
        raise ValueError(f"{pages} pages x {per_page} image tokens + max_new_tokens {max_new_tokens} exceed "
                         f"{spec.name}'s context of {spec.context_length} tokens: at most {max(fit, 0)} pages per pass "
                         f"with this max_new_tokens")


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
