"""Throughput of the batched engine on synthetic Gundam A4 pages (903 image tokens), N forced new tokens.

    python benchmarks/throughput.py --pages 256 --new-tokens 1000 --max-batch 256 --baseline 2   # GPU
    python benchmarks/throughput.py --tiny --device cpu --pages 4 --new-tokens 4 --max-batch 2    # CI smoke
    python benchmarks/throughput.py --family unlimited --pages 256 --new-tokens 1000 --max-batch 256

Full size: the official architecture of `--family` (v1, ocr2, unlimited) with random bf16 weights (no
download), each family's official document guard; the KV cache row per page is printed (Unlimited-OCR's R-SWA
row is prompt + 128, v1's and OCR-2's prompt + new tokens). `--baseline K` also runs the
one-page-at-a-time path (dynamic per-page cache, eager) on K pages in the same process, so the speed-up is a
ratio from one run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import FAMILY_ALIASES, PROMPT_TAIL, build_model, sync, synthetic_page  # noqa: E402
from dsocr_model import preprocess_image  # noqa: E402
from dsocr_model.runtime.engine import Engine, PageRequest  # noqa: E402
from dsocr_model.runtime.generate import generate  # noqa: E402
from dsocr_model.runtime.memory import kv_bytes_per_token  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--max-batch", type=int, default=None, help="default: from free GPU memory (8 on CPU)")
    ap.add_argument("--baseline", type=int, default=0, help="also time the naive path on this many pages")
    ap.add_argument("--family", default="v1", choices=sorted(FAMILY_ALIASES), help="which architecture")
    ap.add_argument("--signals-overhead", type=int, default=0, metavar="K",
                    help="then K alternating runs each with the quality signals on and off (decode time compared)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(not args.tiny, args.device, dtype, family=args.family)
    spec = model.spec
    name = f"{torch.cuda.get_device_name() if cuda else 'cpu'} | {spec.name}"
    views = [preprocess_image(synthetic_page(seed=0), "gundam", spec=spec, normalize=False)]
    tail = [t % model.config.decoder.vocab_size for t in PROMPT_TAIL]
    ids = torch.tensor([model.bos_token_id] + [model.image_token_id] * views[0].num_image_tokens + tail)
    guard = spec.document_guard
    whitelist = set(spec.whitelist_ids)

    def requests(n: int) -> list[PageRequest]:
        return [PageRequest(ids, views, args.new_tokens, ngram_size=guard.ngram_size, window_size=guard.window_size,
                            whitelist=whitelist, eos_token_id=-1) for _ in range(n)]

    seq = len(ids) + args.new_tokens
    rows = {"max_seq_len": seq, "max_prompt_len": len(ids)}  # R-SWA rows hold the prompt and the window only
    # Batch 1 first, on a fresh allocator, so its peak memory is its own.
    b1 = {}
    for graphs in ([False, True] if cuda else [False]):
        engine1 = Engine(model, max_batch=1, cuda_graphs=graphs, **rows)
        engine1.generate(requests(1))  # warm-up (captures the graphs it needs)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(args.device)
        t0 = time.perf_counter()
        (out,) = engine1.generate(requests(1))
        sync(args.device)
        dt1 = time.perf_counter() - t0
        peak1 = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        b1[graphs] = args.new_tokens / dt1
        print(f"{name} | batch 1 ({'CUDA graphs' if graphs else 'eager'}): {dt1:.2f} s = {b1[graphs]:.1f} tok/s, "
              f"TTFT {out.timings['ttft_s'] * 1e3:.1f} ms, prefill {out.timings['prefill_s'] * 1e3:.1f} ms, "
              f"peak {peak1:.2f} GiB")
        del engine1
    if cuda:
        print(f"  batch-1 CUDA graphs vs eager: x{b1[True] / b1[False]:.2f} (same run)")
        torch.cuda.empty_cache()

    engine = Engine(model, max_batch=args.max_batch, **rows)
    kv_page = kv_bytes_per_token(model) * engine.row_len
    print(f"{name} | KV cache row per page: {engine.row_len} slots = {kv_page / 2**20:.1f} MiB "
          f"({len(ids)}-id prompt, {args.new_tokens} new tokens); max_batch {engine.max_batch}")
    sync(args.device)
    t0 = time.perf_counter()
    engine.generate(requests(args.pages))  # cold: captures every graph this schedule needs
    sync(args.device)
    print(f"  cold run (incl. CUDA graph captures): {time.perf_counter() - t0:.2f} s")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(args.device)
    t0 = time.perf_counter()
    outs = engine.generate(requests(args.pages))
    sync(args.device)
    dt = time.perf_counter() - t0
    n_tok = sum(len(o.token_ids) for o in outs)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    ttft = sorted(o.timings["ttft_s"] for o in outs)
    prefill = sorted(o.timings["prefill_s"] for o in outs)
    print(f"{name} | engine: {args.pages} pages x {args.new_tokens} new tokens, max_batch {engine.max_batch}, "
          f"prompt {len(ids)} ids, CUDA graphs {engine.graphs is not None}")
    print(f"  {dt:.2f} s, {args.pages / dt:.2f} pages/s, {n_tok / dt:,.0f} decoded tok/s, "
          f"prefill median {prefill[len(prefill) // 2] * 1e3:.1f} ms/page, "
          f"TTFT median {ttft[len(ttft) // 2] * 1e3:.0f} ms (first {ttft[0] * 1e3:.0f} ms), peak {peak:.2f} GiB")
    if args.signals_overhead:
        signals_overhead(model, requests, rows, args, name)
    if args.baseline:
        sync(args.device)
        t0 = time.perf_counter()
        for _ in range(args.baseline):
            generate(model, ids, views, args.new_tokens, eos_id=-1, ngram_size=guard.ngram_size,
                     window_size=guard.window_size, whitelist=whitelist)
        sync(args.device)
        tb = time.perf_counter() - t0
        base_tps = args.baseline * args.new_tokens / tb
        print(f"  naive path: {args.baseline} pages one at a time, {base_tps:,.0f} tok/s; "
              f"engine speed-up x{(n_tok / dt) / base_tps:.1f} (same run)")


def signals_overhead(model, requests, rows, args, name) -> None:
    """The quality signals' cost: the same batch with `Engine(signals=...)` on and off, alternately."""
    engines = {on: Engine(model, max_batch=args.max_batch, signals=on, **rows) for on in (True, False)}
    for engine in engines.values():
        engine.generate(requests(args.pages))  # captures the graphs this schedule needs
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.signals_overhead):
        for on, engine in engines.items():
            sync(args.device)
            t0 = time.perf_counter()
            outs = engine.generate(requests(args.pages))
            sync(args.device)
            rates[on].append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0))
    on, off = (sum(rates[k]) / len(rates[k]) for k in (True, False))
    print(f"{name} | quality signals: on {' / '.join(f'{r:,.0f}' for r in rates[True])} tok/s, off "
          f"{' / '.join(f'{r:,.0f}' for r in rates[False])} tok/s: overhead {100 * (off - on) / off:+.2f}% (same run)")


if __name__ == "__main__":
    main()
