"""What crosses the engine boundary: the request, the response and the engine protocol.

Both engines (local and OpenAI-compatible) and the pipeline import this module; it imports neither, so
there is no cycle. A request's None fields mean "the model's default" and are filled from the engine's
ModelSpec by `resolve` (mode, tile cap, n-gram guard, guard whitelist); `ngram_size=0` turns the guard off.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from dsocr_model.family.spec import DEFAULT_MAX_NEW_TOKENS, ModelSpec


def resolve_guard(spec: ModelSpec, ngram_size: int | None, window_size: int | None,
                  whitelist: tuple[int, ...] | None) -> tuple[int | None, int | None, tuple[int, ...]]:
    """(ngram_size, window_size, whitelist) with the spec's document guard for None; 0 turns it off."""
    if ngram_size == 0:
        return None, None, ()
    guard = spec.document_guard
    n = guard.ngram_size if ngram_size is None else ngram_size
    if n is None:
        return None, None, ()
    w = window_size if window_size is not None else guard.window_size
    return n, w, tuple(spec.whitelist_ids if whitelist is None else whitelist)


@dataclass(frozen=True)
class OCRRequest:
    image: Any  # PIL RGB page image, or a tuple of them read in one pass (a multi-page prompt)
    prompt: str  # with one "<image>" per image
    mode: str | None = None  # None: the model's default mode
    max_crops: int | None = None  # None: the model's default tile cap
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ngram_size: int | None = None  # None: the model's official guard; 0: off
    window_size: int | None = None
    whitelist: tuple[int, ...] | None = None  # None: the spec's (v1: <td>, </td>)

    @property
    def images(self) -> tuple[Any, ...]:
        return self.image if isinstance(self.image, tuple) else (self.image,)

    def resolve(self, spec: ModelSpec) -> "OCRRequest":
        """A copy with every default filled from `spec` (mode and tile cap checked against it)."""
        spec.mode(self.mode)
        n, w, wl = resolve_guard(spec, self.ngram_size, self.window_size, self.whitelist)
        max_crops = spec.check_crops(spec.max_crops if self.max_crops is None else self.max_crops)
        return replace(self, mode=self.mode or spec.default_mode, max_crops=max_crops, ngram_size=n,
                       window_size=w, whitelist=wl)


@dataclass
class OCRResponse:
    text: str  # raw model text, special tokens kept, EOS removed
    finish_reason: str | None  # "eos" | "length" | None (unknown)
    text_tokens: int | None = None  # generated ids, EOS included
    timings: dict[str, float] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)  # the engine's: mean_logprob, min_logprob, guard_hits


@runtime_checkable
class OCREngine(Protocol):
    """Anything with `identity` (names the model, for cache keys and ids) and `submit`. Optional:
    `spec` (the model's ModelSpec; default DeepSeek-OCR v1), `max_in_flight`, `close()`."""

    identity: str

    def submit(self, request: OCRRequest) -> Future: ...
