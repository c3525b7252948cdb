"""Model-core benchmark: one Gundam A4 page through the simple greedy path (batch 1, eager).

Full size (default on CUDA): the official architecture from tests/data/spec/official_config.json with
random bf16 weights, a synthetic 1190x1684 page (Gundam 2x3 tiles, 903 image tokens), N forced new
tokens (EOS ignored). Prints vision, prefill, decode timings, tokens/s and peak GPU memory.
`--tiny --device cpu` smoke-tests the script on the golden-sized config.

    python benchmarks/model_core.py --new-tokens 200            # H100/H200
    python benchmarks/model_core.py --tiny --device cpu --new-tokens 8
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import PROMPT_TAIL, build_model, sync, synthetic_page  # noqa: E402
from dsocr_model import preprocess_image  # noqa: E402
from dsocr_model.modeling.decoder import KVCache  # noqa: E402
from dsocr_model.runtime.generate import decode_step, generate, prefill  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="golden-sized config instead of the full model")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", default="gundam", help="resolution mode of the synthetic A4 page")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    t = time.perf_counter()
    model = build_model(not args.tiny, args.device, dtype)
    sync(args.device)
    print(f"device {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
          f"torch {torch.__version__}, dtype {dtype}, params {sum(p.numel() for p in model.parameters()):,}, "
          f"build {time.perf_counter() - t:.1f}s")

    page = synthetic_page()
    t = time.perf_counter()
    views = [preprocess_image(page, args.mode, max_crops=6)]
    t_pre = time.perf_counter() - t
    n_img = views[0].num_image_tokens
    tail = [t % model.config.decoder.vocab_size for t in PROMPT_TAIL]  # tiny vocab: fold ids in range
    ids = torch.tensor([model.bos_token_id] + [model.image_token_id] * n_img + tail)
    print(f"page 1190x1684 {args.mode} grid {views[0].grid}, {n_img} image tokens, prompt {len(ids)} ids, "
          f"preprocess {t_pre * 1e3:.1f} ms (CPU)")

    def run_once(n_new: int) -> dict[str, float]:
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(args.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.encode_images(views)
        sync(args.device)
        t1 = time.perf_counter()
        T = len(ids)
        with torch.inference_mode():  # prefill = vision + decoder over the prompt, first token chosen
            dev_ids = ids.to(args.device)[None]
            cache = KVCache(model.config.decoder, 1, T + n_new, args.device, dtype)
            tok = int(prefill(model, model.embed(dev_ids, views), cache).argmax())
            sync(args.device)
            t2 = time.perf_counter()
            for i in range(n_new - 1):  # decode alone, timed on its own (a difference of two runs can go negative)
                tok = int(decode_step(model, torch.tensor([[tok]], device=args.device),
                                      torch.tensor([[T + i]], device=args.device), cache, T + i + 1).argmax())
            sync(args.device)
        t3 = time.perf_counter()
        gen = generate(model, ids, views, n_new, eos_id=-1)
        sync(args.device)
        t4 = time.perf_counter()
        assert len(gen.token_ids) == n_new
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        return {"vision": t1 - t0, "prefill": t2 - t1, "decode": t3 - t2, "generate": t4 - t3, "peak": peak}

    run_once(4)  # warm-up: kernels, allocator
    runs = [run_once(args.new_tokens) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["generate"])
    decode_s = best["decode"]
    n_views = 1 + (views[0].tiles.shape[0] if views[0].is_tiled else 0)
    print(f"vision encode ({n_views} views)   {best['vision'] * 1e3:8.1f} ms")
    print(f"prefill (vision+prompt)   {best['prefill'] * 1e3:8.1f} ms   (time to first token)")
    print(f"generate {args.new_tokens} tokens       {best['generate']:8.3f} s    "
          f"= {args.new_tokens / best['generate']:.1f} tok/s end to end")
    print(f"decode only               {decode_s:8.3f} s    = {(args.new_tokens - 1) / decode_s:.1f} tok/s")
    print(f"peak GPU memory           {best['peak']:8.2f} GiB")
    if not args.device.startswith("cuda"):  # what a laptop user needs to know: seconds per page, and RAM
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
        print(f"CPU page ({args.mode}): {best['prefill'] + best['decode']:.1f} s for prefill + {args.new_tokens} "
              f"tokens; peak RSS {rss:.2f} GiB")
    print("all runs (s):", ", ".join(f"{r['generate']:.3f}" for r in runs))


if __name__ == "__main__":
    main()
