"""`from dsocr_loaders.ray import ocr_dataset, run_job`: the Ray Data batch job (`dsocr[ray]`), implemented in
`dsocr_loaders.apps.ray_job` (see there and the README section "Many machines (Ray)")."""
from __future__ import annotations

from .apps.ray_job import OCRActor, build_manifest, ocr_dataset, reconcile, render_pages, run_job
from .ocr.parquet import read_results

__all__ = ["OCRActor", "build_manifest", "ocr_dataset", "read_results", "reconcile", "render_pages", "run_job"]
