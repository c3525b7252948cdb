"""Where one decode step's time goes, and whether compiling it pays: full-size random weights, one H200.

    PYTHONPATH=. python3 benchmarks/step_profile.py --rows 1 256 --kv-len 1536 --compile default
    PYTHONPATH=. python3 benchmarks/step_profile.py --rows 1 --sweep-moe   # launch settings of fused.py's MoE kernels
    PYTHONPATH=. python3 benchmarks/step_profile.py --rows 1 256 --choose   # + the engine's token choice per step

For each row count: the eager step's CUDA kernels (count, summed GPU time, the costliest), the step replayed as
our CUDA graph, and (with --compile MODE) the same step compiled by torch.compile (inductor, MODE) and captured
in our graph. Event-timed over --iters replays. The cache holds random K/V (attention cost does not depend on
the values).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import build_model  # noqa: E402
from benchmarks.vision_speed import profile_kernels  # noqa: E402
from dsocr_model.modeling import fused  # noqa: E402
from dsocr_model.modeling.decoder import KVCache  # noqa: E402
from dsocr_model.modeling.moe import GATHER_MAX_ASSIGNMENTS  # noqa: E402
from dsocr_model.runtime.batch import StepInputs  # noqa: E402
from dsocr_model.runtime.cuda_graphs import DecodeGraphs  # noqa: E402
from dsocr_model.runtime.generate import decode_step  # noqa: E402


class CompiledGraphs(DecodeGraphs):
    """Our decode graphs around a torch.compile'd step (the experiment the issue asks for)."""

    def __init__(self, model, cache: KVCache, mode: str) -> None:
        super().__init__(model, cache)
        self.step_fn = torch.compile(decode_step, mode=mode, dynamic=False)


def step_inputs(n: int, kv_len: int, vocab: int, device) -> StepInputs:
    pos = torch.full((n, 1), kv_len - 1, device=device)
    return StepInputs(n, torch.randint(0, vocab, (n, 1), device=device), pos, pos.clone(), pos.clone(), kv_len)


def timed_replays(graphs: DecodeGraphs, inputs: StepInputs, iters: int) -> float:
    graphs.step(inputs)  # capture
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        graphs.step(inputs)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def kernel_profile(model, cache: KVCache, inputs: StepInputs) -> None:
    profile_kernels(lambda: decode_step(model, inputs.tokens, inputs.positions, cache.prefix(inputs.n), inputs.kv_len,
                                        inputs.slots, inputs.visible), "eager step")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--kv-len", type=int, default=1536)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--compile", nargs="*", default=[], help="torch.compile modes to try, e.g. default")
    ap.add_argument("--ragged", action="store_true", help="our ragged decode kernel instead of cuDNN SDPA")
    ap.add_argument("--kv-dtype", default=None, choices=[None, "fp8"])
    ap.add_argument("--sweep-moe", action="store_true", help="then fused.py's MoE launch settings, one at a time")
    ap.add_argument("--choose", action="store_true", help="then the engine's guarded token choice, alone and with the step")
    args = ap.parse_args()
    model = build_model(True, "cuda", torch.bfloat16)
    vocab = model.config.decoder.vocab_size
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | kv_len {args.kv_len} | attention "
          f"{'ragged kernel' if args.ragged or args.kv_dtype else 'cuDNN SDPA'}, KV {args.kv_dtype or 'bf16'}", flush=True)
    with torch.inference_mode():
        for n in args.rows:
            cache = KVCache(model.config.decoder, n, args.kv_len + 64, "cuda", torch.bfloat16, spare_slot=True,
                            kv_dtype=args.kv_dtype, ragged=args.ragged)
            for t in (cache.k, cache.v):
                t.copy_(torch.randn(t.shape, device="cuda").to(t.dtype))
            for t in (cache.k_scale, cache.v_scale):
                if t is not None:
                    t.fill_(1 / 64)
            inputs = step_inputs(n, args.kv_len, vocab, "cuda")
            print(f"rows {n}:", flush=True)
            kernel_profile(model, cache, inputs)
            ms = timed_replays(DecodeGraphs(model, cache), inputs, args.iters)
            print(f"  CUDA graph: {ms:.3f} ms/step = {n / ms * 1e3:,.0f} tok/s (step alone)", flush=True)
            for mode in args.compile:
                try:
                    ms = timed_replays(CompiledGraphs(model, cache, mode), inputs, args.iters)
                    print(f"  compiled ({mode}) in our graph: {ms:.3f} ms/step = {n / ms * 1e3:,.0f} tok/s", flush=True)
                except Exception as e:  # report and go on: this is an experiment
                    print(f"  compiled ({mode}): failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            if args.sweep_moe and n * model.config.decoder.num_experts_per_tok <= GATHER_MAX_ASSIGNMENTS:
                sweep_moe(model, cache, inputs, args.iters)
            if args.choose:
                time_choose(model, DecodeGraphs(model, cache), inputs, args.iters)
            del cache
            torch.cuda.empty_cache()


MOE_SETTINGS = {  # each varied alone from fused.py's values
    "ROUTE": [(64, 1024, 8), (64, 512, 16), (64, 256, 8)],
    "EXPERT_UP": [(4, 128, 4), (8, 256, 4), (8, 64, 2), (4, 256, 4), (8, 128, 8)],
    "EXPERT_DOWN": [(8, 128, 4), (16, 256, 4), (16, 64, 2), (8, 256, 4), (32, 128, 4)],
}


def sweep_moe(model, cache: KVCache, inputs: StepInputs, iters: int) -> None:
    """The step as a graph with each of fused.py's MoE kernel settings changed in turn (the others as shipped)."""
    for name, settings in MOE_SETTINGS.items():
        shipped = getattr(fused, name)
        for setting in settings:
            setattr(fused, name, setting)
            try:
                ms = timed_replays(DecodeGraphs(model, cache), inputs, iters)
                print(f"  fused.{name} = {setting}: {ms:.3f} ms/step (shipped {shipped})", flush=True)
            except Exception as e:  # a setting may not compile or fit
                print(f"  fused.{name} = {setting}: failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
        setattr(fused, name, shipped)


def time_choose(model, graphs: DecodeGraphs, inputs: StepInputs, iters: int) -> None:
    """BatchState.choose as the engine runs it between steps (the official PDF guard, quality signals on), eager and
    fused (runtime/choose.py): GPU and host time alone, then step + choose + read-back in a loop as the engine's."""
    import time
    from concurrent.futures import Future

    from dsocr_model.runtime.batch import BatchState, Pending, PageRequest

    n, spec = inputs.n, model.spec
    guard = spec.document_guard
    request = PageRequest(torch.zeros(8, dtype=torch.long), (), 10 ** 6, guard.ngram_size, guard.window_size,
                          set(spec.whitelist_ids), -1)
    graphs.step(inputs)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for label in ("eager", "fused"):
        state = BatchState(n, model.config.decoder.vocab_size, torch.device("cuda"))
        if label == "eager":
            state.fused = None
        for row in range(n):
            state.start(row, Pending(request, Future(), None, 0.0), 100, -1, {})
        state.logits[:n].normal_()
        state.choose(n)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        for _ in range(iters):
            state.choose(n)
        end.record()
        host = (time.perf_counter() - t0) / iters * 1e3
        end.synchronize()
        alone = start.elapsed_time(end) / iters
        start.record()
        for _ in range(iters):
            wait = state.read_back(state.choose(n))
            state.logits[:n] = graphs.step(inputs)
            wait()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / iters
        print(f"  choose ({label}): {alone:.3f} ms a call back to back (GPU), {host:.3f} ms host to launch; step + "
              f"choose + read-back {ms:.3f} ms = {n / ms * 1e3:,.0f} tok/s", flush=True)


if __name__ == "__main__":
    main()
