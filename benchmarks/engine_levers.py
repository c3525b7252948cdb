"""The engine's speed levers one at a time, in one run: the same Gundam A4 pages through the engine with each
lever switched on in turn (cumulative), then mixed traffic (pages of every mode, answers of 200-3,000 tokens) with the defaults.

    PYTHONPATH=. python3 benchmarks/engine_levers.py --pages 256 --new-tokens 1000 --max-batch 256 --mix 256 --batch1 2
    python benchmarks/engine_levers.py --tiny --device cpu --pages 3 --new-tokens 3 --max-batch 2 --mix 3   # smoke

Full size: the official v1 architecture with random bf16 weights (no download), 1,000 forced tokens per page
(EOS ignored), the official PDF n-gram guard. Each configuration runs once cold (CUDA graph captures) and is
then timed. Figures: decoded tok/s, time to first token (median, p95), admission time per page, peak memory.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import PROMPT_TAIL, build_model, percentile, sync, synthetic_page  # noqa: E402
from dsocr_model import preprocess_image  # noqa: E402
from dsocr_model.modeling import fused, sam  # noqa: E402
from dsocr_model.runtime.batch import decode_rows  # noqa: E402
from dsocr_model.runtime.engine import Engine, PageRequest  # noqa: E402

# (name, Engine keywords, views kept as fp32) — each row adds one lever to the one above (rows 5-6: to row 2).
# Four keywords are the benchmark's: sam_fold=False times SAM's rel-pos bias materialised as the reference does,
# sam_kernel=False SAM's attention through SDPA rather than our fused kernel, fused=False the decoder's eager
# pieces rather than fused.py's kernels, host_first=True the decode loop as it was (tokens handed out, then the
# next step launched).
BEFORE = {"sam_fold": False, "sam_kernel": False, "host_first": True}
LEVERS = [
    ("serial admission: one prompt per forward, fp32 views", {"max_prefill_tokens": 0, "overlap_admission": False,
                                                              **BEFORE}, True),
    ("+ prompts prefilled together", {"overlap_admission": False, **BEFORE}, True),
    ("+ uint8 views, pinned upload, normalised on the GPU", {"overlap_admission": False, **BEFORE}, False),
    ("+ admission in its own thread and stream, beside decoding", {"overlap_admission": True, **BEFORE}, False),
    ("  the same, interpreter switch interval 0.5 ms (diagnostic: GIL contention)", {"overlap_admission": True,
                                                                                     "switch_interval": 5e-4,
                                                                                     **BEFORE}, False),
    ("row 2 + SAM rel-pos bias folded into q/k (flash attention)", {"host_first": True, "sam_kernel": False}, False),
    ("+ next step launched before the host hands tokens out (defaults)", {}, False),
    ("+ ragged decode attention (Triton kernel, bf16 KV)", {"ragged_attention": True}, False),
    ("+ fp8 (e4m3) KV cache, a scale per token and head", {"kv_dtype": "fp8"}, False),
    ("row 6 with SAM's attention as folded SDPA (the default before the fused kernel)", {"sam_kernel": False}, False),
    ("row 6 with the decoder's eager norm, RoPE and MoE (before fused.py)", {"fused": False}, False),
]
FIDELITY_ROWS = (6, 8)  # greedy tokens with bf16 KV vs fp8 KV, compared page by page
CONTROL_ROWS = (6, 7)  # bf16 KV both, cuDNN vs our kernel: rounding alone


class HostFirstEngine(Engine):
    """The decode loop before the pipelined one: the chosen ids are read and handed out, then the step launched."""

    def _decode(self, state) -> None:
        live = state.live()
        if not live:
            return
        chosen = state.choose(decode_rows(max(live) + 1, self.max_batch))
        tokens = chosen.tolist()
        for s in live:
            state.emit(s, tokens[s])
        step = state.next_inputs(chosen)
        if step is not None:
            self._step(state, step)


def needs_cuda(options: dict) -> bool:
    return any(options.get(k) for k in ("overlap_admission", "ragged_attention", "kv_dtype"))


def build_engine(model, options: dict, **fixed) -> Engine:
    options = dict(options)
    sys.setswitchinterval(options.pop("switch_interval", 5e-3))  # Python's default is 5 ms
    sam.Attention.fold = options.pop("sam_fold", True)
    sam.Attention.kernel = options.pop("sam_kernel", True)
    fused.ENABLED = options.pop("fused", True)
    engine_class = HostFirstEngine if options.pop("host_first", False) else Engine
    return engine_class(model, **fixed, **options)


MIX_MODES = ["tiny", "small", "base", "large", "gundam"]


def page_request(model, mode: str, new_tokens: int, fp32_views: bool) -> PageRequest:
    spec = model.spec
    views = [preprocess_image(synthetic_page(seed=0), mode, spec=spec, normalize=fp32_views)]
    tail = [t % model.config.decoder.vocab_size for t in PROMPT_TAIL]
    ids = torch.tensor([model.bos_token_id] + [model.image_token_id] * views[0].num_image_tokens + tail)
    guard = spec.document_guard
    return PageRequest(ids, views, new_tokens, ngram_size=guard.ngram_size, window_size=guard.window_size,
                       whitelist=set(spec.whitelist_ids), eos_token_id=-1)


def timed(engine: Engine, requests: list[PageRequest], device: str) -> dict[str, float]:
    engine.generate(requests)  # cold: every CUDA graph this schedule needs
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    outs = engine.generate(requests)
    sync(device)
    dt = time.perf_counter() - t0
    ttft = [o.timings["ttft_s"] for o in outs]
    return {"s": dt, "tok/s": sum(len(o.token_ids) for o in outs) / dt, "pages/s": len(outs) / dt, "outs": outs,
            "ttft_med": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
            "admit_ms": 1e3 * percentile([o.timings["prefill_s"] for o in outs], 0.5),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")}


def report(label: str, r: dict[str, float], base: dict[str, float] | None) -> None:
    ratio = f", x{r['tok/s'] / base['tok/s']:.2f} vs first row" if base else ""
    print(f"  {label}: {r['s']:.2f} s, {r['tok/s']:,.0f} tok/s ({r['pages/s']:.2f} pages/s{ratio}), TTFT median "
          f"{r['ttft_med']:.2f} s / p95 {r['ttft_p95']:.2f} s, admission {r['admit_ms']:.1f} ms/page, "
          f"peak {r['peak_gib']:.2f} GiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=1000)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--mix", type=int, default=0, help="then this many mixed-traffic pages (all levers on)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levers", type=int, nargs="*", help="only these rows (0-based; default all)")
    ap.add_argument("--batch1", type=int, default=0, help="then this many pages at batch 1, loop before/after")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    model = build_model(not args.tiny, args.device, torch.bfloat16 if cuda else torch.float32)
    print(f"{torch.cuda.get_device_name() if cuda else 'cpu'} | {model.spec.name} | {args.pages} Gundam pages x "
          f"{args.new_tokens} tokens, max_batch {args.max_batch}", flush=True)
    base = None
    tokens = {}
    for i, (label, options, fp32_views) in enumerate(LEVERS):
        if needs_cuda(options) and not cuda or (args.levers is not None and i not in args.levers):
            continue  # a second CUDA stream and the Triton kernel need CUDA
        requests = [page_request(model, "gundam", args.new_tokens, fp32_views)] * args.pages
        seq = len(requests[0].input_ids) + args.new_tokens
        engine = build_engine(model, options, max_batch=args.max_batch, max_seq_len=seq)
        r = timed(engine, requests, args.device)
        report(label, r, base)
        base = base or r
        tokens[i] = [o.token_ids for o in r["outs"]]
        engine.close()
        del engine, r
        if cuda:
            torch.cuda.empty_cache()
    if all(i in tokens for i in FIDELITY_ROWS):
        fidelity(*(tokens[i] for i in FIDELITY_ROWS), "fp8 KV")
    if all(i in tokens for i in CONTROL_ROWS):  # how far bf16 alone moves them: another kernel, same cache
        fidelity(*(tokens[i] for i in CONTROL_ROWS), "control, bf16 KV through our kernel")
    if args.batch1:
        batch_one(model, args)
    if args.mix:
        mixed_traffic(model, args)


def fidelity(reference: list[list[int]], candidate: list[list[int]], label: str) -> None:
    """Greedy tokens of each page against the reference: the share of steps before the first difference, and
    the share of positions that agree."""
    prefix = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y))) / max(len(x), 1)
              for x, y in zip(reference, candidate)]
    same = [sum(a == b for a, b in zip(x, y)) / max(len(x), 1) for x, y in zip(reference, candidate)]
    print(f"{label} fidelity ({len(prefix)} pages, greedy vs the defaults): identical for the first {min(prefix):.1%} of "
          f"steps on the worst page (mean {sum(prefix) / len(prefix):.1%}); positions agreeing {min(same):.1%} "
          f"worst, {sum(same) / len(same):.1%} mean", flush=True)


def batch_one(model, args) -> None:
    """One page at a time (max_batch=1), with CUDA graphs: the decoder's eager pieces, then fused.py's kernels."""
    requests = [page_request(model, "gundam", args.new_tokens, False)] * args.batch1
    seq = len(requests[0].input_ids) + args.new_tokens
    print(f"batch 1: {args.batch1} Gundam pages x {args.new_tokens} tokens, one at a time", flush=True)
    base = None
    for label, options in (("pipelined, the decoder's eager pieces", {"fused": False}),
                           ("pipelined, fused norm/RoPE/MoE kernels (default)", {}),
                           ("pipelined, fused, ragged attention", {"ragged_attention": True})):
        if needs_cuda(options) and not args.device.startswith("cuda"):
            continue
        engine = build_engine(model, options, max_batch=1, max_seq_len=seq)
        r = timed(engine, requests, args.device)
        report(label, r, base)
        base = base or r
        engine.close()


def mixed_traffic(model, args) -> None:
    """Pages of every mode, answers drawn from 200-3,000 tokens: rows attend over the longest row's bucket."""
    rng = random.Random(args.seed)
    shapes = {mode: page_request(model, mode, 1, False) for mode in MIX_MODES}
    requests = []
    for i in range(args.mix):
        r = shapes[MIX_MODES[i % len(MIX_MODES)]]
        new = rng.randint(200, 3000) if not args.tiny else rng.randint(2, 6)
        requests.append(PageRequest(r.input_ids, r.images, new, r.ngram_size, r.window_size, r.whitelist, -1))
    seq = max(len(r.input_ids) + r.max_new_tokens for r in requests)
    tokens = sum(q.max_new_tokens for q in requests)
    print(f"mixed traffic: {args.mix} pages ({'/'.join(MIX_MODES)} in turn), answers 200-3,000 tokens "
          f"({tokens:,} in all), KV rows of {seq} slots", flush=True)
    base = None
    for label, options in (("defaults", {}), ("ragged decode attention", {"ragged_attention": True})):
        if needs_cuda(options) and not args.device.startswith("cuda"):
            continue
        engine = build_engine(model, options, max_batch=args.max_batch, max_seq_len=seq)
        r = timed(engine, requests, args.device)
        report(label, r, base)
        base = base or r
        engine.close()

if __name__ == "__main__":
    main()
