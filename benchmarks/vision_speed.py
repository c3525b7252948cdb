"""Vision encoder speed per page, three ways to run SAM's rel-pos attention: the bias materialised (the reference's
way), folded into q and k (flash SDPA), and our fused Triton kernel (sam_attention.py, the default on CUDA).

    PYTHONPATH=. python3 benchmarks/vision_speed.py --pages 16 [--sweep] [--compile]

Full-size random bf16 weights, synthetic A4 Gundam pages as uint8 views (the engine's path), encoded together
as one admission group does; event-timed, after a warm-up, ms per page for the whole encoder (SAM, CLIP,
projector) and for SAM alone (batches of 16 views of each size, per page: one global view and the page's tiles).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import build_model, cuda_ms, synthetic_page  # noqa: E402
from dsocr_model import preprocess_image  # noqa: E402
from dsocr_model.modeling import sam, vision  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="then SAM compiled by torch.compile (inductor)")
    ap.add_argument("--sweep", action="store_true", help="then the kernel's block sizes, warps and stages")
    args = ap.parse_args()
    model = build_model(True, "cuda", torch.bfloat16)
    views = [preprocess_image(synthetic_page(seed=i), "gundam", spec=model.spec, normalize=False)
             for i in range(args.pages)]
    tiles = sum(v.tiles.shape[0] for v in views if v.is_tiled) / args.pages
    print(f"{torch.cuda.get_device_name()} | {args.pages} Gundam A4 pages (a 1024² global view and {tiles:g} tiles of "
          f"640² each)", flush=True)
    big = torch.randn(16, 3, 1024, 1024, device="cuda", dtype=torch.bfloat16)  # the encoder's batches of 16 views
    small = torch.randn(16, 3, 640, 640, device="cuda", dtype=torch.bfloat16)
    encoder = model.model.sam_model
    results = {}
    ways = {"materialised bias (reference)": (False, False), "folded into q/k (flash)": (False, True),
            "fused Triton kernel": (True, True)}

    def sam_per_page() -> float:
        return (cuda_ms(lambda: encoder(big), args.iters) + tiles * cuda_ms(lambda: encoder(small), args.iters)) / 16

    with torch.inference_mode():
        for label, (kernel, fold) in ways.items():
            sam.Attention.kernel, sam.Attention.fold = kernel, fold
            whole = cuda_ms(lambda: model.encode_images(views), args.iters) / args.pages
            results[label] = whole
            print(f"  rel-pos {label}: encoder {whole:.2f} ms/page, SAM {sam_per_page():.2f} ms/page, "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
            torch.cuda.reset_peak_memory_stats()
            profile_kernels(lambda: encoder(big), f"SAM on 16 views of 1024², {label}", top=6)
    with torch.inference_mode():  # the rest of the encoder, with the defaults
        sam_big, sam_small = encoder(big), encoder(small)
        clip = model.model.vision_model
        clip_ms = (cuda_ms(lambda: clip(sam_big), args.iters)
                   + tiles * cuda_ms(lambda: clip(sam_small), args.iters)) / 16
        print(f"  CLIP alone: {clip_ms:.2f} ms/page", flush=True)
        for chunk in (16, 32, 64):  # views per SAM/CLIP forward (vision.MAX_VIEWS_PER_BATCH)
            torch.cuda.reset_peak_memory_stats()
            ms = cuda_ms(lambda: vision.encode_images(model.model, views, chunk), args.iters) / args.pages
            print(f"  encoder, {chunk} views per forward: {ms:.2f} ms/page, peak "
                  f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
        profile_kernels(lambda: model.encode_images(views), f"the whole encoder, {args.pages} pages", top=15)
    first, folded, fused = results.values()
    print(f"  encoder, same run: fused vs folded x{folded / fused:.2f}, vs materialised x{first / fused:.2f}", flush=True)
    if args.sweep:
        from dsocr_model.modeling import sam_attention

        with torch.inference_mode():
            for setting in [(64, 4, 3), (128, 4, 3), (128, 8, 3), (64, 4, 2), (64, 8, 3)]:
                sam_attention.BLOCK_M, sam_attention.NUM_WARPS, sam_attention.NUM_STAGES = setting
                try:
                    print(f"  kernel (queries, warps, stages) {setting}: SAM {sam_per_page():.2f} ms/page", flush=True)
                except Exception as e:  # a setting may not fit in shared memory
                    print(f"  kernel {setting}: failed ({type(e).__name__}: {str(e)[:80]})", flush=True)
    with torch.inference_mode():
        if args.compile:
            compiled = torch.compile(encoder)
            t0 = time.perf_counter()
            compiled(big), compiled(small)
            torch.cuda.synchronize()
            print(f"  SAM compiled: first calls (compiling both sizes) {time.perf_counter() - t0:.1f} s", flush=True)
            sam_ms = (cuda_ms(lambda: compiled(big), args.iters) + tiles * cuda_ms(lambda: compiled(small), args.iters)) / 16
            print(f"  SAM compiled: {sam_ms:.2f} ms/page", flush=True)
            profile_kernels(lambda: compiled(big), "compiled SAM on 16 views of 1024²")


def profile_kernels(fn, label: str, top: int = 12) -> None:
    """The costliest CUDA kernels of one call, by summed GPU time."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"  {label}: {len(kernels)} kernels, {sum(e.device_time_total for e in kernels) / 1e3:.2f} ms", flush=True)
    total: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for e in kernels:
        total[e.name[:100]] += e.device_time_total
        count[e.name[:100]] += 1
    for name, us in total.most_common(top):
        print(f"    {us / 1e3:7.3f} ms  x{count[name]:<4d} {name}", flush=True)


if __name__ == "__main__":
    main()
