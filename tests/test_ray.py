"""The Ray Data job on a real local Ray cluster (CPU): the real tiny model over real PDFs, one row per page
(file errors included), results equal to a local run, resume without redoing or duplicating pages, a poison
page that kills its worker ends as an error row, and the loaders read the output with a local run's ids."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from conftest import FIXTURES, GOLDEN  # noqa: E402
from dsocr_loaders import OCRPipeline, OCRSettings  # noqa: E402
from dsocr_loaders.ocr.engines import LocalEngine  # noqa: E402
from dsocr_loaders.ocr.parquet import done_page_ids, read_results  # noqa: E402
from dsocr_loaders.apps.ray_resume import has_ray_checkpoint  # noqa: E402

PDFS = [str(FIXTURES / "pdf" / "multi_page.pdf"), str(FIXTURES / "pdf" / "2206.01062_pg3_password_1234.pdf")]
TINY = dict(model=str(GOLDEN), device="cpu", ocr={"mode": "tiny", "max_new_tokens": 4})


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tests = str(Path(__file__).parent)
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": tests + os.pathsep +
                                                                   os.environ.get("PYTHONPATH", "")}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(cluster, tmp_path_factory):
    from dsocr_loaders.ray import run_job

    out = tmp_path_factory.mktemp("ray") / "out"
    return out, run_job(PDFS, out, **TINY)


def test_every_manifest_page_has_one_row_equal_to_a_local_run(job):
    out, summary = job
    assert summary == {**summary, "pages": 6, "resumed": 0, "reconciled": 0}
    rows = read_results(out)
    assert [(Path(r.source).name, r.page, r.status) for r, _, _ in rows] == \
        [("multi_page.pdf", p, "truncated") for p in range(5)] + [("2206.01062_pg3_password_1234.pdf", 0, "error")]
    assert rows[-1][0].error_type == "PasswordError" and rows[-1][0].is_file_error
    with LocalEngine(str(GOLDEN), device="cpu") as engine:
        local = list(OCRPipeline(engine, ocr=OCRSettings(mode="tiny", max_new_tokens=4)).run(PDFS[0]))
    got = [r for r, _, _ in rows[:5]]
    assert [r.raw_text for r in got] == [r.raw_text for r in local]
    assert [(r.width, r.height, r.unit, r.text_tokens, r.page_label) for r in got] == \
        [(r.width, r.height, r.unit, r.text_tokens, r.page_label) for r in local]
    assert [r.quality.verdict for r in got] == [r.quality.verdict for r in local]


def test_resume_redoes_nothing_and_duplicates_nothing(job):
    from dsocr_loaders.ray import run_job

    out, _ = job
    again = run_job(PDFS, out, **TINY)
    assert again["resumed"] == 6 and again["reconciled"] == 0
    # a killed job: part of the output is missing; the rerun does only that part
    partial = out.parent / "partial"
    shutil.copytree(out, partial)
    import pyarrow.parquet as pq

    files = sorted((partial / "results").glob("*.parquet"))
    table = pq.read_table(files[0])
    for f in files:
        f.unlink()
    pq.write_table(table.slice(0, 3), files[0])  # as if the job had been killed after three pages
    kept = len(read_results(partial))
    resumed = run_job(PDFS, partial, **TINY)
    assert resumed["resumed"] == kept < 6
    rows = read_results(partial)
    assert len(rows) == 6 and len({(r.source, r.page) for r, _, _ in rows}) == 6


def test_a_poison_page_ends_as_an_error_row_and_the_job_finishes(cluster, tmp_path):
    from dsocr_loaders.ray import run_job

    images = [str(FIXTURES / "images" / n) for n in ("Portrait_6.jpg", "double-column-A.jpg")]
    poison = list(next(iter(OCRPipeline(None).iter_pages(images[0]))).image.size)  # as rendered (EXIF applied)
    summary = run_job(images, tmp_path / "out", model=str(GOLDEN), engine_factory="ray_engines:PoisonEngine",
                      engine_options={"poison_size": poison}, batch_size=1, rows_per_block=1)
    rows = {Path(r.source).name: r for r, _, _ in read_results(tmp_path / "out")}
    assert summary["reconciled"] == 1 and len(rows) == 2
    assert rows["Portrait_6.jpg"].status == "error" and rows["Portrait_6.jpg"].error_type == "WorkerCrashedError"
    assert rows["double-column-A.jpg"].status == "ok"


def test_an_actor_keeps_several_batches_in_flight(cluster, tmp_path):
    """The engine batches what the actor holds: Ray must hand one actor several batches at once, not one."""
    from dsocr_loaders.ray import run_job

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):  # distinct files: content-hash ids
        (folder / f"p{i}.png").write_bytes(_png(i))
    log = tmp_path / "held.txt"
    summary = run_job([str(folder)], tmp_path / "out", model=str(GOLDEN), engine_factory="ray_engines:SlowEngine",
                      engine_options={"delay_s": 1.0, "log": str(log)}, batch_size=1, rows_per_block=1,
                      in_flight_per_actor=4)
    assert summary["pages"] == 8 and summary["reconciled"] == 0
    assert max(int(n) for n in log.read_text().split()) >= 3


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64 + seed, 48), (seed * 20, 80, 120)).save(buf, "PNG")
    return buf.getvalue()


def test_loaders_read_the_output_with_a_local_runs_ids_and_metadata(job):
    from dsocr_loaders.langchain import DeepSeekOCRLoader
    from dsocr_loaders.llama_index import DeepSeekOCRReader

    out, _ = job
    options = dict(model=str(GOLDEN), device="cpu", mode="tiny", max_new_tokens=4)
    from_job = DeepSeekOCRLoader.from_results(out, **options).load()
    local = DeepSeekOCRLoader(PDFS, **options).load()
    assert [d.id for d in from_job] == [d.id for d in local]
    assert [d.page_content for d in from_job] == [d.page_content for d in local]
    drop = ("ocr_quality_mean_logprob", "ocr_quality_min_logprob")  # equal up to fp32 noise: other batches
    for a, b in zip(from_job, local):
        assert a.metadata.get(drop[0]) == pytest.approx(b.metadata.get(drop[0]), abs=1e-4)
    assert [{k: v for k, v in d.metadata.items() if k not in drop} for d in from_job] == \
        [{k: v for k, v in d.metadata.items() if k not in drop} for d in local]
    nodes = DeepSeekOCRReader(**options).load_results(out)
    local_nodes = DeepSeekOCRReader(**options).load_data(PDFS)
    assert [n.id_ for n in nodes] == [n.id_ for n in local_nodes]


def test_cli_engine_ray(cluster, tmp_path, capsys):
    from dsocr_loaders.apps.cli import main

    args = ["convert", PDFS[0], "-o", str(tmp_path), "--engine", "ray", "--num-gpus", "0", "--model", str(GOLDEN),
            "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "4", "--pages-delimiter", "|", "-q"]
    assert main(args) == 0
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert [p["page"] for p in doc["pages"]] == list(range(5)) and doc["chunks"] is not None
    assert (tmp_path / "multi_page.md").read_text().count("|") == 4
    assert "5 pages with Ray" in capsys.readouterr().out
    assert main(args) == 0 and "5 resumed" in capsys.readouterr().out  # a second run reads, not recomputes


def test_a_folder_with_a_corrupt_and_a_locked_file_gives_their_error_rows(cluster, tmp_path, monkeypatch):
    from dsocr_loaders.apps import ray_job
    from dsocr_loaders.ray import run_job

    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(PDFS[1], folder / "locked.pdf")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    hashed: list[str] = []
    real_hash = ray_job.content_hash
    monkeypatch.setattr(ray_job, "content_hash", lambda p: hashed.append(str(p)) or real_hash(p))
    summary = run_job([str(folder)], tmp_path / "out", **TINY)
    assert sorted(Path(p).name for p in hashed) == ["corrupt.pdf", "locked.pdf"]  # each file read once per job
    rows = {Path(r.source).name: r for r, _, _ in read_results(tmp_path / "out")}
    assert summary["pages"] == 2 and summary["reconciled"] == 0
    assert rows["locked.pdf"].error_type == "PasswordError" and rows["corrupt.pdf"].status == "error"
    assert rows["corrupt.pdf"].error_type in ("CorruptFileError", "EmptyInputError") and rows["corrupt.pdf"].error


def test_a_job_killed_mid_run_resumes_without_redoing_or_duplicating(cluster, tmp_path):
    """kill -9 of a job's whole process group (driver and its local cluster) once some pages are written; the
    rerun does only the rest and every page ends with exactly one row."""
    import signal
    import subprocess
    import sys
    import time

    import pyarrow.parquet as pq

    from dsocr_loaders.ray import run_job

    out = tmp_path / "out"
    script = ("import os, ray; os.environ['RAY_AUTH_MODE'] = 'disabled'; "
              "ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False); "
              "from dsocr_loaders.ray import run_job; "
              f"run_job([{PDFS[0]!r}], {str(out)!r}, model={str(GOLDEN)!r}, device='cpu', "
              "ocr={'mode': 'tiny', 'max_new_tokens': 48}, batch_size=1, rows_per_block=1, in_flight_per_actor=1)")
    job = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    deadline = time.time() + 240
    written = 0
    while time.time() < deadline and job.poll() is None:
        written = 0
        for f in out.glob("results/*.parquet"):
            try:
                written += pq.read_metadata(f).num_rows
            except Exception:  # being written
                pass
        if written >= 2:
            break
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert 2 <= written < 5, written  # killed mid-run
    before = {r.page for r, _, _ in read_results(out)}
    checkpointed = _checkpoint_ids(out)
    assert checkpointed or not has_ray_checkpoint()  # Ray's own checkpoint recorded finished pages too
    summary = run_job([PDFS[0]], out, model=str(GOLDEN), device="cpu", ocr={"mode": "tiny", "max_new_tokens": 48})
    rows = read_results(out)
    assert summary["resumed"] == len(before) >= 2 and summary["reconciled"] == 0
    assert sorted(r.page for r, _, _ in rows) == [0, 1, 2, 3, 4]  # exactly one row per page
    if has_ray_checkpoint():  # both runs' pages are in Ray's checkpoint, and its files are not read as results
        assert set(_checkpoint_ids(out)) == done_page_ids(out) and len(done_page_ids(out)) == 5


def _checkpoint_ids(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [i for f in (out / "_checkpoint").glob("**/*.parquet") for i in pq.read_table(f)["page_id"].to_pylist()]
