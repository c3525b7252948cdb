"""A Ray Data batch job: a library of PDFs and images through DeepSeek-OCR on many GPUs (`dsocr[ray]`).

    from dsocr_loaders.ray import ocr_dataset, run_job
    ds = ocr_dataset(["library/"], model="deepseek-ai/DeepSeek-OCR", num_gpus=8)   # a lazy ray.data.Dataset
    summary = run_job(["library/"], "out/", num_gpus=8)                            # writes, resumes, reconciles

Rows are pages (SCALEOUT.md §2.2): a manifest on the driver names every page of every input with a stable id
(file content hash + page + OCR settings), a file that cannot be read is one row that ends as an error; a
CPU stage renders each page to PNG bytes (not arrays: 15-50x less object-store traffic); a GPU stage, an
actor per GPU (`OCRActor`, model loaded once, async so several batches are in flight on the engine's
continuous batching) runs the same OCRPipeline a local run uses and emits one row per page, failures
included, with every field of PageResult. `run_job` writes Parquet as blocks finish, skips pages already in
the output (an anti-join on page ids: resuming a killed job redoes nothing finished), bounds retries of a
crashed worker, and ends with a reconciliation that writes an error row for every manifest page without one,
so each page has exactly one row. `DeepSeekOCRLoader.from_results(out)` / `DeepSeekOCRReader.load_results`
turn the output into Documents with the ids and metadata of a local run.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

try:
    import ray
    import ray.data
except ImportError as e:  # say which extra brings it
    raise ImportError(f"dsocr_loaders.ray needs Ray Data ({e}): pip install 'dsocr[ray]'") from e

from ..ocr.formats import PageImage, open_document
from ..ocr.ids import content_hash
from ..ocr.parquet import done_page_ids, result_row
from ..ocr.results import PageResult
from ..ocr.settings import (DEFAULT_DPI, DEFAULT_TABLE_FORMAT, EngineSettings, OCRSettings, OutputSettings,
                            RenderSettings)
from ..ocr.sources import iter_inputs
from .ray_resume import MANIFEST_DIR, manifest_source, ray_checkpoint

logger = logging.getLogger(__name__)
MAX_RESTARTS = 2  # retries of a batch whose worker crashed (the worker itself always restarts)
PAGE_TIMEOUT_S = 1800.0  # a page that hangs its engine longer than this ends as an error row


def _job_pipeline(engine: dict[str, Any], ocr: dict[str, Any], render: dict[str, Any], output: dict[str, Any]):
    """The pipeline an actor runs: EngineSettings, or `engine_factory` ("module:callable" importable on the
    workers, returning any OCREngine: e.g. an OpenAIEngine to a pool of servers)."""
    import importlib

    from ..ocr.pipeline import OCRPipeline

    factory = engine.get("factory")
    if factory:
        module, _, name = factory.partition(":")
        built: Any = getattr(importlib.import_module(module), name)(**engine.get("options", {}))
    else:
        built = EngineSettings(**{k: v for k, v in engine.items() if k != "factory"})
    return OCRPipeline(built, ocr=OCRSettings(**ocr), render=RenderSettings(**render),
                       output=OutputSettings(**output), on_error="page")


def build_manifest(inputs: Any, *, settings_key: str, glob: str = "**/*") -> list[dict[str, Any]]:
    """One row per page of every input (a file that cannot be opened: one row with page -1)."""
    rows = []
    for name, path in iter_inputs(inputs, glob):
        digest = ""
        try:
            digest = content_hash(path)
            doc = open_document(name, path, warn=False)
            total = doc.total_pages
            doc.close()
        except Exception as e:  # the error type travels as the message's prefix
            rows.append({"page_id": f"{digest or name}:-1:{settings_key}", "path": str(path), "source": name,
                         "page": -1, "sha256": digest, "error": f"{type(e).__name__}: {e}"})
            continue
        rows += [{"page_id": f"{digest}:{p}:{settings_key}", "path": str(path), "source": name, "page": p,
                  "sha256": digest, "error": ""} for p in range(total)]
    for i, row in enumerate(rows):
        row["order"] = i  # the inputs' order: results are read back in it
    return rows


def render_pages(batch: dict[str, Any], *, dpi: float) -> dict[str, Any]:
    """CPU stage: each manifest row's page as PNG bytes plus what the result needs of it; errors as rows."""
    keys = ("page_id", "path", "source", "page", "sha256", "error", "order")
    out: dict[str, list] = {k: [] for k in (*keys, "png", "meta")}
    for i, page_id in enumerate(batch["page_id"]):
        row = {k: batch[k][i] for k in keys}
        png, meta = b"", {}
        if not row["error"]:
            try:
                doc = open_document(row["source"], row["path"], dpi=dpi, warn=False)
                try:
                    (page,) = list(doc.pages([int(row["page"])]))
                finally:
                    doc.close()
                if page.error:
                    raise RuntimeError(page.error)
                buf = io.BytesIO()
                page.image.save(buf, "PNG")
                png = buf.getvalue()
                meta = {k: getattr(page, k) for k in ("page_label", "total_pages", "width", "height", "unit",
                                                      "rotation", "doc_metadata", "text_layer")}
            except Exception as e:  # a page that fails to render is an error row, never a lost page
                row["error"] = f"render failed: {type(e).__name__}: {e}"
        for k, v in row.items():
            out[k].append(v)
        out["png"].append(png)
        out["meta"].append(json.dumps(meta, default=str))
    return out


class OCRActor:
    """GPU stage: one per GPU; the model loads once, in the constructor. Async, so Ray keeps several batches in
    flight on one actor and the engine's continuous batching stays full. Every page becomes one row."""

    def __init__(self, *, engine: dict, ocr: dict, render: dict, output: dict, page_timeout_s: float = PAGE_TIMEOUT_S,
                 pages_in_flight: int = 64):
        from concurrent.futures import ThreadPoolExecutor

        from ..ocr.ids import content_key

        self.pipeline = _job_pipeline(engine, ocr, render, output)
        self.key = list(content_key(self.pipeline))
        self.timeout = page_timeout_s
        # A page holds a thread while the engine decodes it: as many threads as pages Ray keeps in flight here
        # (asyncio's default pool, ~cores + 4, would cap the engine's batch at that many rows).
        self._threads = ThreadPoolExecutor(max(1, pages_in_flight), thread_name_prefix="dsocr-ray-page")

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = await asyncio.gather(*(self._one(batch, i) for i in range(len(batch["page_id"]))))
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}

    async def _one(self, batch: dict[str, Any], i: int) -> dict[str, Any]:
        from PIL import Image

        page_id, sha, order = batch["page_id"][i], batch["sha256"][i], int(batch["order"][i])
        meta = json.loads(batch["meta"][i] or "{}")
        item = PageImage(None, max(int(batch["page"][i]), 0), meta.get("page_label") or str(int(batch["page"][i]) + 1),
                         meta.get("total_pages") or 0, meta.get("width"), meta.get("height"), meta.get("unit") or "px",
                         batch["source"][i], meta.get("rotation") or 0, meta.get("doc_metadata") or {},
                         error=batch["error"][i] or None, text_layer=meta.get("text_layer"))
        if not item.error:
            item.image = Image.open(io.BytesIO(batch["png"][i])).convert("RGB")
        if int(batch["page"][i]) < 0:  # a file that could not be opened: its one error row, as a local run gives
            kind, _, message = batch["error"][i].partition(": ")
            result = PageResult(page=0, status="error", error=batch["error"][i], error_type=kind, source=item.source,
                                unit=None)
            return result_row(result, page_id, sha, self.key, order)
        try:
            run = asyncio.get_running_loop().run_in_executor(self._threads, lambda: list(self.pipeline.run_pages([item])))
            (result,) = await asyncio.wait_for(run, self.timeout)
        except asyncio.TimeoutError:
            result = PageResult(page=item.page, status="error", error=f"TimeoutError: no answer in {self.timeout:.0f} s",
                                error_type="TimeoutError", source=item.source, total_pages=item.total_pages)
        except Exception as e:  # an unusable engine included: the row says so, the job goes on
            result = PageResult(page=item.page, status="error", error=f"{type(e).__name__}: {e}",
                                error_type=type(e).__name__, source=item.source, total_pages=item.total_pages)
        return result_row(result, page_id, sha, self.key, order)


def _settings(model, device, engine_options, ocr, dpi, table_format, factory=None) -> tuple[dict, dict, dict, dict]:
    engine = {"model": model, "device": device, "options": dict(engine_options or {}), "factory": factory}
    return engine, dict(ocr or {}), {"dpi": dpi}, {"table_format": table_format, "extract_figures": False}


def _settings_key(engine: dict, ocr: dict) -> str:
    from ..ocr.settings import spec_for

    return OCRSettings(**ocr).resolve(spec_for(engine["model"])).key()


def ocr_dataset(inputs: Any, *, model: str | None = None, device: str = "auto", engine_options: dict | None = None,
                ocr: dict | None = None, dpi: float = DEFAULT_DPI, table_format: str = DEFAULT_TABLE_FORMAT, num_gpus: float = 0,
                num_actors: int = 1, batch_size: int = 8, rows_per_block: int = 8, in_flight_per_actor: int = 4,
                skip_page_ids: set[str] | None = None, page_timeout_s: float = PAGE_TIMEOUT_S,
                engine_factory: str | None = None, manifest_dir: str | Path | None = None,
                manifest: list[dict[str, Any]] | None = None) -> "ray.data.Dataset":
    """The lazy dataset of result rows (one per page) for `inputs`; `skip_page_ids` leaves finished pages out.

    num_gpus: per OCR actor (1 on a GPU cluster; 0 runs on CPUs); num_actors: the actor pool's size (one per GPU).
    manifest_dir: write the manifest there as Parquet and read it back (what Ray's job checkpoint needs).
    manifest: `build_manifest`'s rows for these inputs and settings, when the caller has them (each file is
    hashed and opened once per job, not once per pass).
    """
    from ..ocr.settings import default_model

    engine, ocr_kw, render, output = _settings(model or default_model(), device, engine_options, ocr, dpi, table_format,
                                               engine_factory)
    if manifest is None:
        manifest = build_manifest(inputs, settings_key=_settings_key(engine, ocr_kw))
    manifest = [r for r in manifest if r["page_id"] not in (skip_page_ids or set())]
    if not manifest:
        return ray.data.from_items([])
    ds = manifest_source(manifest, Path(manifest_dir) if manifest_dir else None)
    ds = ds.repartition(target_num_rows_per_block=rows_per_block)
    ds = ds.map_batches(render_pages, fn_kwargs={"dpi": dpi}, batch_size=rows_per_block, num_cpus=1,
                        max_retries=MAX_RESTARTS)
    return ds.map_batches(
        OCRActor, fn_constructor_kwargs={"engine": engine, "ocr": ocr_kw, "render": render, "output": output,
                                         "page_timeout_s": page_timeout_s,
                                         "pages_in_flight": batch_size * in_flight_per_actor},
        batch_size=batch_size, num_gpus=num_gpus, num_cpus=1,
        compute=_actor_pool(num_actors, in_flight_per_actor),
        # a crashed actor always restarts (model reloaded), but a batch is retried at most MAX_RESTARTS times: a
        # poison page fails its block (dropped, then reconciled) instead of hanging the job
        max_restarts=-1, max_task_retries=MAX_RESTARTS)


def _actor_pool(num_actors: int, in_flight: int) -> "ray.data.ActorPoolStrategy":
    """One OCR actor per GPU that runs `in_flight` batches at once: Ray runs one call per actor at a time unless
    told otherwise, which would cap the engine's batch at one Ray batch (measured: 27% of the in-process rate)."""
    import inspect

    options = {"size": num_actors, "max_tasks_in_flight_per_actor": in_flight}
    if "max_concurrent_calls_per_actor" in inspect.signature(ray.data.ActorPoolStrategy).parameters:
        options["max_concurrent_calls_per_actor"] = in_flight
    return ray.data.ActorPoolStrategy(**options)


def run_job(inputs: Any, output: str | Path, *, checkpoint: bool = True, **options: Any) -> dict[str, int]:
    """Run the job into Parquet under `output`, resuming from what is there, then reconcile: every manifest page
    ends with exactly one row. Pages lost with a crashed worker (the poison page and whatever shared its worker)
    get a second pass one page at a time, so only a page that crashes its worker alone ends as an error row.

    Resume: pages already in the output are left out (an anti-join on page ids), and with `checkpoint` (default)
    Ray Data's own job checkpoint is kept under `output`/_checkpoint where the installed Ray has it (ray_resume.py).
    """
    output = Path(output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    done = done_page_ids(output)
    ray.data.DataContext.get_current().max_errored_blocks = -1  # a poisoned block is dropped, then reconciled
    t0 = time.perf_counter()
    manifest = build_manifest(inputs, settings_key=_settings_key(*_job_settings(options)))  # once per job
    with ray_checkpoint(output, checkpoint) as on:
        logger.info("resume: %d page(s) already written%s", len(done), "; Ray's job checkpoint on" if on else "")
        manifest_dir = output / MANIFEST_DIR if on else None
        ocr_dataset(inputs, skip_page_ids=done, manifest_dir=manifest_dir, manifest=manifest, **options).write_parquet(
            str(output / "results"), min_rows_per_file=1)
        lost = {r["page_id"] for r in manifest} - done_page_ids(output)
        if lost:
            logger.warning("%d page(s) lost with a crashed worker: reading them again one at a time", len(lost))
            isolated = {**options, "batch_size": 1, "rows_per_block": 1, "in_flight_per_actor": 1}
            ocr_dataset(inputs, skip_page_ids=done_page_ids(output), manifest_dir=manifest_dir, manifest=manifest,
                        **isolated).write_parquet(str(output / "results"), min_rows_per_file=1)
    return reconcile(inputs, output, resumed=len(done), seconds=time.perf_counter() - t0, manifest=manifest, **options)


def _job_settings(options: dict[str, Any]) -> tuple[dict, dict]:
    from ..ocr.settings import default_model

    engine, ocr_kw, _, _ = _settings(options.get("model") or default_model(), options.get("device", "auto"),
                                     options.get("engine_options"), options.get("ocr"), options.get("dpi", DEFAULT_DPI), DEFAULT_TABLE_FORMAT)
    return engine, ocr_kw


def reconcile(inputs: Any, output: Path, *, resumed: int = 0, seconds: float = 0.0,
              manifest: list[dict[str, Any]] | None = None, **options: Any) -> dict[str, int]:
    """Write an error row for every manifest page the output lacks (a worker that crashed on it for good)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if manifest is None:
        manifest = build_manifest(inputs, settings_key=_settings_key(*_job_settings(options)))
    done = done_page_ids(output)
    missing = [r for r in manifest if r["page_id"] not in done]
    for r in missing:
        logger.warning("%s page %d: no result after the job's retries: written as an error row", r["source"], r["page"] + 1)
    if missing:
        rows = [result_row(PageResult(page=max(r["page"], 0), status="error", error_type="WorkerCrashedError",
                                      error="WorkerCrashedError: the page's worker crashed on every retry",
                                      source=r["source"]), r["page_id"], r["sha256"], [], r["order"]) for r in missing]
        pq.write_table(pa.Table.from_pylist(rows), output / f"reconciled-{int(time.time() * 1000)}.parquet")
    return {"pages": len(manifest), "resumed": resumed, "reconciled": len(missing), "seconds": round(seconds, 2)}
