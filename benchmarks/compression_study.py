"""Optical compression on the engine: rendered pages decoded back, pages/s and (with real weights) Table 2.

    python benchmarks/compression_study.py --pages 256 --mode small               # GPU, full-size random weights
    python benchmarks/compression_study.py --model DIR --study                    # real weights: Table 2 layout
    python benchmarks/compression_study.py --tiny --device cpu --pages 4          # CI smoke

Random weights cannot read, so their fidelity is noise: the random-weight run measures the round trip's speed
(render, preprocess, prefill, decode a page's worth of tokens). With real weights, `--study` renders the text
at lengths spanning the paper's bins and prints the Table 2 layout for tiny/small/base.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import build_model, sync  # noqa: E402
from dsocr_loaders.compress import compression_study, decompress, render_text_pages  # noqa: E402
from dsocr_loaders.ocr.types import OCRResponse  # noqa: E402

TEXT = (Path(__file__).parent / "data" / "tale_of_two_cities.txt").read_text(encoding="utf-8")


class ModelEngine:
    """An OCREngine over an in-memory model (random weights have no checkpoint folder to load from)."""

    identity = "benchmark"

    def __init__(self, model, max_batch: int, new_tokens: int) -> None:
        from dsocr_model.runtime.engine import Engine

        self.model, self.spec, self.new_tokens = model, model.spec, new_tokens
        self.engine = Engine(model, max_batch=max_batch, max_seq_len=2048)

    def submit(self, request):
        from concurrent.futures import Future

        from dsocr_model import preprocess_image
        from dsocr_model.runtime.batch import PageRequest

        views = [preprocess_image(request.image, request.mode, spec=self.spec)]
        tail = [t % self.model.config.decoder.vocab_size for t in (201, 31008, 270, 13)]  # "\nFree OCR." stand-ins
        ids = torch.tensor([self.model.bos_token_id] + [self.model.image_token_id] * views[0].num_image_tokens + tail)
        inner = self.engine.submit(PageRequest(ids, views, self.new_tokens, eos_token_id=-1))
        out: Future = Future()
        inner.add_done_callback(lambda f: out.set_result(OCRResponse("", "length", len(f.result().token_ids))))
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--mode", default="small", choices=("tiny", "small", "base", "large"))
    ap.add_argument("--new-tokens", type=int, default=None, help="forced tokens per page (default: its text tokens)")
    ap.add_argument("--model", default=None, help="a real checkpoint: decode for real")
    ap.add_argument("--study", action="store_true", help="with --model: the Table 2 layout for tiny/small/base")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if args.model:
        from dsocr_loaders import LocalEngine

        engine = LocalEngine(args.model, device=args.device).load()
        if args.study:
            words = TEXT.split()
            texts = [" ".join((words * 20)[:n]) for n in range(460, 1000, 40)]  # ~600-1300 DeepSeek tokens
            table = compression_study(texts, modes=("tiny", "small", "base"), engine=engine,
                                      tokenizer=engine._model.tokenizer)
            print(table.to_markdown())
            return
    else:
        model = build_model(not args.tiny, args.device, torch.bfloat16 if cuda else torch.float32)
        page_chars = len(render_text_pages(TEXT * 4, mode=args.mode)[0].text)
        engine = ModelEngine(model, max_batch=min(args.pages, 256), new_tokens=args.new_tokens or int(page_chars / 4.33))
    pages = render_text_pages(TEXT * (3 * args.pages + 1), mode=args.mode)[: args.pages]
    decompress(pages[:2], engine=engine)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    decoded = decompress(pages, engine=engine)
    sync(args.device)
    dt = time.perf_counter() - t0
    tokens = sum(d.generated_tokens or 0 for d in decoded)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{name} | {'real' if args.model else 'random'} weights{'' if not args.tiny else ' (tiny)'}, mode "
          f"{args.mode}: {len(pages)} pages at {pages[0].font_px:g} px, {dt:.2f} s, {len(pages) / dt:.2f} pages/s, "
          f"{tokens / dt:,.0f} decoded tok/s")


if __name__ == "__main__":
    main()
