"""The architecture registry: `config.json` -> an Architecture (spec + model class + its sanitize).

An entry names the `architectures` and `model_type` values of the checkpoints it reads; the model class
(given as "module:Class" so this module stays torch-free) builds from its `config_class` and owns the
checkpoint's `sanitize`. Lookup prefers an `architectures` match (DeepSeek-OCR and DeepSeek-OCR-2 share
`model_type deepseek_vl_v2`), then `model_type`; entries registered later win ties.
Adding an architecture: one spec, its encoder file(s), one `register(...)` line at the bottom.
"""
from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .deepseek_ocr import DEEPSEEK_OCR
from .deepseek_ocr2 import DEEPSEEK_OCR2
from .spec import ModelSpec
from .unlimited_ocr import UNLIMITED_OCR

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "deepseek-ai/DeepSeek-OCR"


class UnknownArchitectureError(ValueError):
    """A config.json that no registered architecture reads."""


@dataclass(frozen=True)
class Architecture:
    name: str
    spec: ModelSpec
    model: str  # "package.module:Class"; the class has `config_class`, `sanitize` and `to_checkpoint`
    architectures: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()  # official repositories: their spec is known before config.json is downloaded

    def model_class(self) -> type:
        module, _, cls = self.model.partition(":")
        return getattr(importlib.import_module(module), cls)


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add (or replace, by name) an architecture; returns it."""
    _REGISTRY.pop(arch.name, None)
    _REGISTRY[arch.name] = arch
    return arch


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def architectures() -> list[Architecture]:
    return list(_REGISTRY.values())


def known_modes() -> list[str]:
    """Every mode of every registered architecture (CLI help)."""
    return sorted({m for a in _REGISTRY.values() for m in a.spec.modes})


def architecture_for_config(config: Mapping[str, Any]) -> Architecture:
    names = set(config.get("architectures") or [])
    model_type = config.get("model_type")
    entries = list(reversed(_REGISTRY.values()))
    for a in entries:
        if names & set(a.architectures):
            return a
    for a in entries:
        if model_type in a.model_types:
            return a
    if not names and model_type is None:  # a bare config (re-saved, converted): read it as v1
        logger.warning("config.json names no architecture or model_type: reading it as DeepSeek-OCR v1")
        return _REGISTRY["deepseek-ocr"]
    known = ", ".join(f"{a.name} ({'/'.join(a.architectures + a.model_types)})" for a in _REGISTRY.values())
    raise UnknownArchitectureError(f"config.json names architectures {sorted(names)} and model_type {model_type!r}; "
                                   f"dsocr reads: {known}")


def read_config(model: str | Path, revision: str | None = None) -> dict[str, Any] | None:
    """config.json of a local directory or of a hub snapshot already in the cache; None when not at hand."""
    path = Path(model).expanduser()
    if path.is_dir():
        file = path / "config.json"
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(model), "config.json", revision=revision)
    except Exception as e:  # not an id the hub cache understands
        logger.debug("no hub cache entry for %s: %s", model, e)
        return None
    return json.loads(Path(found).read_text(encoding="utf-8")) if isinstance(found, str) else None


def architecture_for(model: str | Path | Mapping[str, Any], revision: str | None = None) -> Architecture:
    """The architecture of a config dict, a local checkpoint or a hub id (an official id names its family
    before its config.json is downloaded; any other id defaults to DeepSeek-OCR v1 until then)."""
    config = model if isinstance(model, Mapping) else read_config(model, revision)
    if config is None:
        for a in reversed(_REGISTRY.values()):
            if str(model).lower() in (h.lower() for h in a.hub_ids):
                return a
        logger.debug("no config.json for %s yet: assuming %s", model, _REGISTRY["deepseek-ocr"].name)
        return _REGISTRY["deepseek-ocr"]
    return architecture_for_config(config)


def spec_for(model: str | Path | Mapping[str, Any], revision: str | None = None) -> ModelSpec:
    return architecture_for(model, revision).spec


register(Architecture("deepseek-ocr", DEEPSEEK_OCR, "dsocr_model.modeling.model:DeepseekOCR",
                      architectures=("DeepseekOCRForCausalLM",), model_types=("deepseek_vl_v2",),
                      hub_ids=(DEFAULT_MODEL_ID,)))
# OCR-2 shares v1's model_type: only its `architectures` tells them apart.
register(Architecture("deepseek-ocr-2", DEEPSEEK_OCR2, "dsocr_model.modeling.ocr2:DeepseekOCR2",
                      architectures=("DeepseekOCR2ForCausalLM",), hub_ids=("deepseek-ai/DeepSeek-OCR-2",)))
# v1's weights layout and model class; the config's sliding_window turns on R-SWA decoding.
register(Architecture("unlimited-ocr", UNLIMITED_OCR, "dsocr_model.modeling.model:DeepseekOCR",
                      architectures=("UnlimitedOCRForCausalLM", "UnlimitedOCRForConditionalGeneration"),
                      model_types=("unlimited-ocr", "unlimited_ocr"), hub_ids=("baidu/Unlimited-OCR",)))
