"""Names for the weights an engine runs, for cache keys and document ids, by content and without torch.

A local checkpoint is named by a digest of its config.json and of each safetensors file's size and header
(tensor names, dtypes, shapes and offsets), never by its path: the same weights elsewhere keep their ids,
and no path leaks into a vector store's metadata. A hub id is named by the commit its config.json resolves
to (downloaded if need be, from the cache when offline), before the first page: the first and second runs
of a job agree, and a new upstream revision is another model.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

HEADER_LIMIT = 64 << 20  # a safetensors header larger than this is not one


def checkpoint_digest(path: Path) -> str:
    h = hashlib.sha256()
    h.update((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            h.update(f"{f.stat().st_size};".encode() + (fh.read(n) if n <= HEADER_LIMIT else b""))
    return h.hexdigest()[:16]


def checkpoint_identity(model: str, revision: str | None = None) -> str:
    """`sha256:<digest>` for a local directory, `<id>@<commit>` for a hub id (raises when neither the hub
    nor the local cache has it)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return f"sha256:{checkpoint_digest(path)}"
    from huggingface_hub import hf_hub_download

    config = hf_hub_download(model, "config.json", revision=revision)  # from the cache when offline
    return f"{model}@{Path(config).parent.name}"  # .../snapshots/<commit>/config.json


def local_identity(model: str, revision: str | None = None) -> str:
    """The identity of LocalEngine(model): its weights, named by `checkpoint_identity`."""
    return f"dsocr_model:{checkpoint_identity(model, revision)}"
