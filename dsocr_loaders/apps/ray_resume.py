"""Resuming a killed Ray job with Ray Data's own checkpoint (Ray >= 2.54, beta), beside our anti-join.

Ray's `CheckpointConfig` records each finished row's id with a commit that keeps the data files and the
checkpoint in step, and a rerun filters those rows out at the source (SCALEOUT.md §2.4). It has conditions we
meet here: the id column (`page_id`) exists at the source read and stays one row per page through every
operator; the source must be files (an in-memory `from_items` manifest is not filtered: measured on Ray 2.60),
so the manifest is written as Parquet under the output and read back; the config is global to the DataContext,
so it is set only around the OCR dataset's write (a manifest-writing dataset under it would mark every page
done). Our anti-join on the page ids already in the output runs first either way: it covers Ray versions
without the checkpoint, outputs of earlier runs, and the reconciliation. Directories under the output whose
names start with "_" hold this bookkeeping; result readers skip them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
import ray.data

logger = logging.getLogger(__name__)
CHECKPOINT_DIR = "_checkpoint"
MANIFEST_DIR = "_manifest"


def has_ray_checkpoint() -> bool:
    try:
        from ray.data.checkpoint import CheckpointConfig  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def ray_checkpoint(output: Path, enabled: bool) -> Iterator[bool]:
    """Ray's job checkpoint under `output`/_checkpoint while the block runs (yields whether it is on)."""
    if not (enabled and has_ray_checkpoint()):
        yield False
        return
    from ray.data.checkpoint import CheckpointConfig

    ctx = ray.data.DataContext.get_current()
    before = ctx.checkpoint_config
    ctx.checkpoint_config = CheckpointConfig(id_column="page_id", checkpoint_path=str(output / CHECKPOINT_DIR),
                                             delete_checkpoint_on_success=False)
    try:
        yield True
    finally:
        ctx.checkpoint_config = before


def manifest_source(manifest: list[dict[str, Any]], directory: Path | None) -> "ray.data.Dataset":
    """The manifest as a dataset: read back from a Parquet file in `directory` (a file source, which Ray's
    checkpoint needs), or from memory when no directory is given."""
    if directory is None:
        return ray.data.from_items(manifest)
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.parquet"):  # this run's manifest only: inputs may have changed since
        old.unlink()
    pq.write_table(pa.Table.from_pylist(manifest), directory / "manifest.parquet")
    return ray.data.read_parquet(str(directory))
