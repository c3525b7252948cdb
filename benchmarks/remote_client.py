"""How many pages per second the remote engine's client side can feed a server (CPU only, no model).

The server on 127.0.0.1 (tests/chat_server.py) answers every page after `--server-ms` with a fixed grounded
reply, so what is measured is ours: rendering the PDF page, PNG encoding it into a data URL, the HTTP round
trip and parsing the answer, at several concurrency levels. A GPU serving DeepSeek-OCR does ~11 pages/s
(benchmarks/RESULTS.md); the client should be far above that.

    python benchmarks/remote_client.py --pages 40 --concurrency 1 8 32
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chat_server import ChatServer, ok, slow  # noqa: E402
from dsocr_loaders import EngineSettings, OCRPipeline  # noqa: E402

REPLY = "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 120]]<|/det|>\n# Results\n\n" \
        "<|ref|>text<|/ref|><|det|>[[100, 150, 900, 400]]<|/det|>\n" + "Accuracy rose. " * 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdf", default=str(ROOT / "tests/data/fixtures/pdf/multi_page.pdf"))
    ap.add_argument("--pages", type=int, default=40, help="pages sent per measurement (the PDF is repeated)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--server-ms", type=float, default=0.0, help="simulated server time per page")
    args = ap.parse_args()
    reply = ok(REPLY, tokens=900)
    answer = (lambda body, n: slow(args.server_ms / 1000, reply)) if args.server_ms else (lambda body, n: reply)
    render = OCRPipeline()
    pages = []
    while len(pages) < args.pages:
        pages.extend(render.iter_pages(args.pdf))
    pages = pages[:args.pages]
    w, h = pages[0].image.size
    print(f"{len(pages)} pages of {w}x{h} px, server answers after {args.server_ms:.0f} ms, {os.cpu_count()} CPUs")
    with ChatServer(answer) as server:
        for c in args.concurrency:
            pipe = OCRPipeline(EngineSettings(base_url=server.url, engine="openai", options={"concurrency": c}))
            t0 = time.perf_counter()
            results = list(pipe.run_pages(pages))
            dt = time.perf_counter() - t0
            assert all(r.status == "ok" and len(r.elements) == 2 for r in results)
            enc = sorted(r.timings["encode_s"] for r in results)[len(results) // 2]
            req = sorted(r.timings["request_s"] for r in results)[len(results) // 2]
            print(f"concurrency {c:3d}: {len(results) / dt:7.1f} pages/s  (median encode {enc * 1000:.0f} ms, "
                  f"request incl. encode {req * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
