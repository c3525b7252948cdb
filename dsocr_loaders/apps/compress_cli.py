"""`dsocr render` and `dsocr compress-study`: the optical compression tools on the command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..compress.geometry import MODES



def add_commands(sub, formatter) -> None:
    r = sub.add_parser("render", help="render a text file into page images for optical compression",
                       formatter_class=formatter)
    r.add_argument("textfile")
    r.add_argument("-o", "--output", required=True, help="folder for page_NNN.png and pages.json")
    r.add_argument("--mode", default="small", choices=MODES)
    r.add_argument("--font", default=None, help="a .ttf/.otf font (default: the bundled DejaVu Sans)")
    r.add_argument("--font-px", type=float, default=None, help="glyph size in model-input pixels")
    r.add_argument("--target-ratio", type=float, default=None, help="text tokens per vision token (e.g. 10)")
    r.add_argument("--fit", default="paginate", choices=("paginate", "one_page"))
    s = sub.add_parser("compress-study", help="the paper's Table 2 on your own texts (renders, decodes, scores)",
                       formatter_class=formatter)
    s.add_argument("files", nargs="+", help="text files, one page of text each")
    s.add_argument("--modes", nargs="+", default=["tiny", "small"], choices=MODES[:4])
    s.add_argument("--model", default=None, help="checkpoint (default: $DSOCR_MODEL or the hub's DeepSeek-OCR)")
    s.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    from ..compress import DoesNotFitError, MissingGlyphError, render_text_pages

    if args.command == "render":
        try:
            text = Path(args.textfile).read_text(encoding="utf-8")
            pages = render_text_pages(text, mode=args.mode, font=args.font, font_px=args.font_px,
                                      target_ratio=args.target_ratio, fit=args.fit)
        except (OSError, MissingGlyphError, DoesNotFitError, ValueError) as e:
            print(f"dsocr: {e}", file=sys.stderr)
            return 2
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(pages):
            (out / f"page_{i:03d}.png").write_bytes(page.png())
        meta = [{"page": i, "span": p.span, "font_px": p.font_px, "lines": p.lines, "mode": p.mode,
                 "config_hash": p.config_hash} for i, p in enumerate(pages)]
        (out / "pages.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        print(f"dsocr: {len(pages)} page(s) at {pages[0].font_px:g} px -> {out}")
        return 0
    from ..compress import compression_study
    from ..ocr.engines import LocalEngine
    from ..ocr.settings import default_model

    model = args.model or default_model()
    with LocalEngine(model, device=args.device) as engine:
        engine.load()
        texts = [Path(f).read_text(encoding="utf-8") for f in args.files]
        table = compression_study(texts, modes=tuple(args.modes), engine=engine, tokenizer=engine._model.tokenizer)
    print(table.to_markdown())
    return 0
