"""Names for the weights an engine runs, for cache keys and document ids, without torch or the network."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def checkpoint_identity(model: str, revision: str | None = None) -> str:
    """A local directory: its path plus a digest of config.json and the checkpoint files' names and sizes, so
    weights saved again under the same path are another model. A hub id: `id@commit` of the snapshot in the
    Hugging Face cache, so a new upstream revision is another model; `id@revision` before the first download.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
            h.update(f"{f.name}:{f.stat().st_size};".encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
        return f"{path.resolve()}#{h.hexdigest()[:12]}"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision)
        if isinstance(found, str):
            return f"{model}@{Path(found).parent.name}"  # .../snapshots/<commit>/config.json
    except Exception as e:  # not an id the hub cache understands: the name alone then
        logger.debug("no hub cache entry for %s: %s", model, e)
    return f"{model}@{revision or 'main'}"


def local_identity(model: str, revision: str | None = None) -> str:
    """The identity of LocalEngine(model): its weights, named by `checkpoint_identity`."""
    return f"dsocr_model:{checkpoint_identity(model, revision)}"
