"""`dsocr serve` under many concurrent clients, next to the same engine called in-process, in one run.

    PYTHONPATH=. python3 benchmarks/serve_throughput.py --random-checkpoint /tmp/dsocr-full --pages 256 \
        --clients 64 128 256 --max-tokens 1000                                            # GPU
    python benchmarks/serve_throughput.py --model tests/data/golden --device cpu --pages 4 --clients 2 \
        --max-tokens 4                                                                    # CPU smoke

One LocalEngine serves both: first the pages are submitted to it in-process (what `dsocr convert` does), then a
real uvicorn server on 127.0.0.1 takes the same pages as vLLM-style chat completions (PNG data URLs, the
official PDF guard in `vllm_xargs`) from C concurrent httpx clients. Pages are distinct synthetic Gundam A4
pages, encoded once before timing. Figures: pages/s and decoded tok/s (the answers' token counts), latency
median and p95, and the server's rate as a share of the in-process one.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import percentile, random_checkpoint, synthetic_page  # noqa: E402
from dsocr_loaders.ocr.engines import LocalEngine  # noqa: E402
from dsocr_loaders.ocr.types import OCRRequest  # noqa: E402

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."


def in_process(engine: LocalEngine, pages: list, args) -> dict[str, float]:
    t0 = time.perf_counter()
    futures = [engine.submit(OCRRequest(p, PROMPT, "gundam", None, args.max_tokens, 20, 50)) for p in pages]
    outs = [f.result() for f in futures]
    dt = time.perf_counter() - t0
    return {"s": dt, "pages/s": len(outs) / dt, "tok/s": sum(o.text_tokens or 0 for o in outs) / dt,
            "lat_med": float("nan"), "lat_p95": float("nan"), "errors": 0}


def start_server(engine: LocalEngine, max_in_flight: int) -> tuple[str, object]:
    import uvicorn

    from dsocr_loaders.apps.server import ServerSettings, create_app

    app = create_app(engine, ServerSettings("dsocr-bench", max_in_flight=max_in_flight))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=120))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1", server


async def clients(base: str, urls: list[str], concurrency: int, max_tokens: int) -> dict[str, float]:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)
    latencies, tokens, errors = [], [0], [0]

    async def worker(client) -> None:
        while not queue.empty():
            url = queue.get_nowait()
            body = {"model": "dsocr-bench", "temperature": 0, "max_tokens": max_tokens,
                    "vllm_xargs": {"ngram_size": 20, "window_size": 50, "mode": "gundam"},
                    "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT[len("<image>\n"):]},
                                                              {"type": "image_url", "image_url": {"url": url}}]}]}
            t0 = time.perf_counter()
            r = await client.post(f"{base}/chat/completions", json=body)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors[0] += 1
                continue
            tokens[0] += r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    return {"s": dt, "pages/s": (len(urls) - errors[0]) / dt, "tok/s": tokens[0] / dt,
            "lat_med": percentile(latencies, 0.5), "lat_p95": percentile(latencies, 0.95), "errors": errors[0]}


def report(label: str, r: dict[str, float], ref: dict[str, float] | None) -> None:
    share = f", {100 * r['tok/s'] / ref['tok/s']:.0f}% of in-process" if ref else ""
    lat = f", latency median {r['lat_med']:.1f} s / p95 {r['lat_p95']:.1f} s" if r["lat_med"] == r["lat_med"] else ""
    print(f"  {label}: {r['s']:.1f} s, {r['pages/s']:.2f} pages/s, {r['tok/s']:,.0f} decoded tok/s{share}{lat}, "
          f"{r['errors']} errors", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--random-checkpoint", help="write (once) and use a full-size random checkpoint here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--clients", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--max-batch", type=int, default=None)
    args = ap.parse_args()
    model = str(random_checkpoint(args.random_checkpoint, args.device)) if args.random_checkpoint else args.model
    pages = [synthetic_page(seed=i) for i in range(args.pages)]
    urls = []
    for p in pages:
        buf = io.BytesIO()
        p.save(buf, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    engine = LocalEngine(model, device=args.device, max_batch=args.max_batch,
                         max_seq_len=1000 + args.max_tokens).load()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name} | {args.pages} distinct Gundam A4 pages, max_tokens {args.max_tokens}, engine max_batch "
          f"{engine._engine.max_batch}", flush=True)
    in_process(engine, pages[: max(1, args.pages // 8)], args)  # warm-up: graphs and preprocessing threads
    ref = in_process(engine, pages, args)
    report("in-process engine (LocalEngine.submit)", ref, None)
    base, server = start_server(engine, max_in_flight=max(args.clients))
    asyncio.run(clients(base, urls[: max(1, args.pages // 8)], min(args.clients), args.max_tokens))  # warm-up
    for c in args.clients:
        report(f"dsocr serve, {c} concurrent clients", asyncio.run(clients(base, urls, c, args.max_tokens)), ref)
    server.should_exit = True
    engine.close()


if __name__ == "__main__":
    main()
