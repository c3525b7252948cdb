"""Find, read and strictly load the official safetensors checkpoint.

Model directory: a local path, or a hub id (default `deepseek-ai/DeepSeek-OCR`) resolved with
`huggingface_hub` at the user's run time. Shards: `model.safetensors`, or any `*.safetensors` listed in
`model.safetensors.index.json` (the official repo ships `model-00001-of-000001.safetensors` + index).
Each model class's `sanitize()` is the one place for its checkpoint's quirks.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn


logger = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]


class CheckpointError(ValueError):
    """The checkpoint does not match the model layout (lists every offending tensor)."""


class ModelNotFoundError(FileNotFoundError):
    """Neither a local model directory nor a reachable hub repository."""


def resolve_model_dir(path_or_id: str | Path, revision: str | None = None) -> Path:
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    text = str(path_or_id)
    if p.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelNotFoundError(f"model directory {text!r} does not exist (a hub id looks like 'org/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with transformers
        raise ModelNotFoundError(f"{text!r} is not a local directory and huggingface_hub is not installed") from e
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated, network error: all end the same way for the user
        raise ModelNotFoundError(
            f"could not get {text!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Download it once where there is network (`huggingface-cli download {text} --local-dir DIR`) "
            f"and pass DIR as the model path, or set HF_HOME to a cache that already holds it."
        ) from e


def checkpoint_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [model_dir / n for n in names]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(model_dir.glob("*.safetensors"))
    if not found:
        raise ModelNotFoundError(f"no *.safetensors checkpoint in {model_dir}")
    return found


def read_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(model_dir):
        if not f.is_file():
            raise ModelNotFoundError(f"checkpoint shard {f} listed in the index is missing")
        state.update(load_file(str(f), device="cpu"))
    return state


def check_state_dict(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> None:
    """Compare two {key: shape} layouts (checkpoint names) and name every offending tensor."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    misshaped = sorted(f"{k}: checkpoint {got[k]} != model {expected[k]}"
                       for k in set(expected) & set(got) if got[k] != expected[k])
    if missing or unexpected or misshaped:
        lines = [f"checkpoint does not match the model ({len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(misshaped)} mis-shaped)"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  mis-shaped: {k}" for k in misshaped]
        raise CheckpointError("\n".join(lines))


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> None:
    """Sanitize (the model class's one place for checkpoint quirks), check against the model's layout in
    checkpoint names, then strict assign-load (the model may live on `meta`); floats are cast to `dtype`."""
    state = model.sanitize(state)
    check_state_dict(shapes(model.to_checkpoint(model.state_dict())), shapes(model.to_checkpoint(state)))
    for k in list(state):  # one tensor at a time, so host memory holds at most one extra copy
        v = state[k]
        state[k] = v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
    model.load_state_dict(state, strict=True, assign=True)
