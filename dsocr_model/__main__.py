"""`python -m dsocr_model IMAGE [--model PATH_OR_ID] [--mode MODE] ...`: OCR one image, print raw text.

The plain model path (no loaders): preprocess, build the model's official prompt, greedy decode with its
official single-image n-gram guard, print the raw model output (grounding tags included) and a timing
line on stderr. Modes, tasks and guard defaults come from the spec of the model's architecture.
"""
from __future__ import annotations

import argparse
import sys
import time

from .family.registry import DEFAULT_MODEL_ID, known_modes, spec_for
from .family.spec import DEFAULT_MAX_NEW_TOKENS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dsocr_model", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--model", default=DEFAULT_MODEL_ID, help="local model directory or hub id")
    ap.add_argument("--mode", default=None, help=f"resolution mode (default: the model's); one of {known_modes()}")
    ap.add_argument("--task", default=None, help="official prompt by name (default: the model's, e.g. markdown)")
    ap.add_argument("--prompt", help="raw prompt (overrides --task); must contain <image>")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--max-crops", type=int, default=None, help="tile cap (default: the model's)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)
    spec = spec_for(args.model)
    try:
        spec.mode(args.mode)
        prompt = args.prompt or spec.prompt(args.task)
    except ValueError as e:
        ap.error(str(e))

    import torch
    from PIL import Image, ImageOps

    from .modeling.model import DeepseekOCR
    from .modeling.preprocess import preprocess_image
    from .runtime.generate import generate

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model = DeepseekOCR.from_pretrained(args.model, device=device, dtype=args.dtype)
    image = ImageOps.exif_transpose(Image.open(args.image)).convert("RGB")
    views = [preprocess_image(image, args.mode, args.max_crops, model.spec)]
    ids = model.build_input_ids(prompt, views)
    whitelist = {i for i in map(model.special_token_id, model.spec.guard_whitelist) if i is not None}
    guard = model.spec.image_guard
    t1 = time.perf_counter()
    gen = generate(model, ids, views, args.max_new_tokens, ngram_size=guard.ngram_size,
                   window_size=guard.window_size, whitelist=whitelist)
    t2 = time.perf_counter()
    ids_out = gen.token_ids[:-1] if gen.finish_reason == "eos" else gen.token_ids
    print(model.tokenizer.decode(ids_out, skip_special_tokens=False).strip())
    print(f"[{len(gen.token_ids)} tokens, finish={gen.finish_reason}, {views[0].num_image_tokens} image tokens, "
          f"load {t1 - t0:.1f}s, generate {t2 - t1:.1f}s on {device}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
