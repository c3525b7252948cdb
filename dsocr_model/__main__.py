"""`python -m dsocr_model IMAGE [--model PATH_OR_ID] [--mode gundam] ...`: OCR one image, print raw text.

The plain model path (no loaders): preprocess, build the official prompt, greedy decode with the official
n-gram guard, print the raw model output (grounding tags included) and a timing line on stderr.
"""
from __future__ import annotations

import argparse
import sys
import time

PROMPTS = {
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",
    "free_ocr": "<image>\nFree OCR.",
    "ocr": "<image>\n<|grounding|>OCR this image.",
    "figure": "<image>\nParse the figure.",
    "describe": "<image>\nDescribe this image in detail.",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dsocr_model", description=__doc__)
    ap.add_argument("image")
    ap.add_argument("--model", default="deepseek-ai/DeepSeek-OCR", help="local model directory or hub id")
    ap.add_argument("--mode", default="gundam", choices=["tiny", "small", "base", "large", "gundam", "gundam-m"])
    ap.add_argument("--task", default="markdown", choices=sorted(PROMPTS))
    ap.add_argument("--prompt", help="raw prompt (overrides --task); must contain <image>")
    ap.add_argument("--max-new-tokens", type=int, default=8192)
    ap.add_argument("--max-crops", type=int, default=6)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)

    import torch
    from PIL import Image, ImageOps

    from . import DeepseekOCR, preprocess_image

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model = DeepseekOCR.from_pretrained(args.model, device=device, dtype=args.dtype)
    image = ImageOps.exif_transpose(Image.open(args.image)).convert("RGB")
    views = [preprocess_image(image, args.mode, max_crops=args.max_crops)]
    ids = model.build_input_ids(args.prompt or PROMPTS[args.task], views)
    whitelist = {i for i in (model.special_token_id("<td>"), model.special_token_id("</td>")) if i is not None}
    t1 = time.perf_counter()
    gen = model.generate_greedy(ids, views, args.max_new_tokens, ngram_size=30, window_size=90, whitelist=whitelist)
    t2 = time.perf_counter()
    ids_out = gen.token_ids[:-1] if gen.finish_reason == "eos" else gen.token_ids
    print(model.tokenizer.decode(ids_out, skip_special_tokens=False).strip())
    print(f"[{len(gen.token_ids)} tokens, finish={gen.finish_reason}, {views[0].num_image_tokens} image tokens, "
          f"load {t1 - t0:.1f}s, generate {t2 - t1:.1f}s on {device}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
