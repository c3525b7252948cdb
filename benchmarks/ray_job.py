"""The Ray Data job on one machine next to the in-process engine, in one run: the distributed path's overhead.

    PYTHONPATH=. python3 benchmarks/ray_job.py --random-checkpoint /tmp/dsocr-full --pages 512 --max-tokens 1000 \
        --num-gpus 1                                                                      # one GPU
    python benchmarks/ray_job.py --model tests/data/golden --device cpu --pages 4 --max-tokens 4 --num-gpus 0  # smoke

Inputs are distinct synthetic Gundam A4 pages written as PNG files. In-process: a LocalEngine (loaded before
timing) reads the same files, the engine's rate. Ray: `run_job` over the folder on a local cluster (manifest,
CPU render stage, one OCR actor per GPU, Parquet out, reconciliation), timed end to end, actor start and model
load included (printed apart). Both engines get the same max_batch.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import random_checkpoint, synthetic_page  # noqa: E402

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--random-checkpoint", help="write (once) and use a full-size random checkpoint here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pages", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--num-gpus", type=int, default=1)
    ap.add_argument("--num-cpus", type=int, default=None)
    args = ap.parse_args()
    model = str(random_checkpoint(args.random_checkpoint, args.device)) if args.random_checkpoint else args.model
    folder = Path(tempfile.mkdtemp(prefix="dsocr-ray-bench-"))
    for i in range(args.pages):
        synthetic_page(seed=i).save(folder / f"page{i:05d}.png")
    options = {"max_batch": args.max_batch, "max_seq_len": 1000 + args.max_tokens}
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name} | {args.pages} distinct Gundam A4 PNG pages, max_tokens {args.max_tokens}, max_batch "
          f"{args.max_batch}", flush=True)

    ref, load_s = in_process(model, folder, args, options)
    print(f"  in-process engine: {ref:.2f} pages/s (model load {load_s:.1f} s, not timed)", flush=True)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()

    import ray

    from dsocr_loaders.ray import run_job

    ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=False, log_to_driver=False)
    out = folder / "out"
    in_flight = 6
    batch = max(8, -(-args.max_batch // (in_flight - 2)))  # enough pages in flight to fill the engine's rows
    t0 = time.perf_counter()
    summary = run_job([str(folder)], out, model=model, device=args.device if args.num_gpus else "cpu",
                      engine_options=options, ocr={"mode": "gundam", "max_new_tokens": args.max_tokens},
                      num_gpus=args.num_gpus, num_actors=max(1, args.num_gpus), batch_size=batch,
                      in_flight_per_actor=in_flight)
    dt = time.perf_counter() - t0
    rate = args.pages / dt
    print(f"  Ray job ({max(1, args.num_gpus)} actor(s), batch {batch} x {in_flight} in flight): {dt:.1f} s end to "
          f"end = {rate:.2f} pages/s, {100 * rate / ref:.0f}% of in-process; without a model load like the one "
          f"above: {args.pages / max(1e-9, dt - load_s):.2f} pages/s; summary {summary}", flush=True)
    ray.shutdown()


def in_process(model: str, folder: Path, args, options: dict) -> tuple[float, float]:
    from PIL import Image

    from dsocr_loaders.ocr.engines import LocalEngine
    from dsocr_loaders.ocr.types import OCRRequest

    engine = LocalEngine(model, device=args.device, **options).load()
    load_s = engine.load_s
    files = sorted(folder.glob("*.png"))

    def run(paths) -> float:
        t0 = time.perf_counter()
        futures = [engine.submit(OCRRequest(Image.open(p).convert("RGB"), PROMPT, "gundam", None, args.max_tokens))
                   for p in paths]
        for f in futures:
            f.result()
        return len(paths) / (time.perf_counter() - t0)

    run(files[: max(1, len(files) // 8)])  # warm-up: graphs, preprocessing threads
    rate = run(files)
    engine.close()
    return rate, load_s


if __name__ == "__main__":
    main()
