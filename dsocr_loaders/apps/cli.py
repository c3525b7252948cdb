"""`dsocr convert INPUT... -o OUTDIR`: PDFs and images -> markdown / JSON per document, with a progress bar.

Per input document it writes `NAME.md` (pages joined by `--pages-delimiter`, by default the form feed of
LangChain's PDF loaders, as every surface of dsocr) and/or `NAME.json` (every PageResult), with `--figures` the figure crops under
`NAME_images/`, and with `--layout` `NAME_layouts.pdf` (the pages with their boxes drawn and labelled).
`--engine openai --base-url URL` sends pages to a vLLM/SGLang server instead of running the model here.
Output names are sanitised: nothing is written outside OUTDIR whatever the input is called.
The result cache is on by default (`--no-cache` to skip, `--cache-dir` to move it). The exit code is 1 when
any page failed, 2 for bad arguments or unreadable inputs.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from itertools import groupby
from pathlib import Path

from dsocr_model.family.registry import known_modes

from ..ocr import settings as S
from .compress_cli import add_commands as add_compress_commands
from .compress_cli import run as run_compress
from ..ocr.chunks import chunk_pages
EXAMPLES = """examples:
  dsocr convert report.pdf -o out/                       # out/report.md, out/report.json
  dsocr convert scans/ invoices/*.pdf -o out/ --pages 1-3 --figures --layout
  dsocr convert poster.png -o out/ --task free_ocr --mode large
  dsocr convert book.pdf -o out/ --model baidu/Unlimited-OCR --pages-per-pass 8   # several pages per pass
  dsocr convert scan.pdf -o out/ --model deepseek-ai/DeepSeek-OCR-2
  dsocr convert report.pdf -o out/ --engine openai --base-url http://localhost:8000/v1   # vLLM / SGLang
  DSOCR_API_KEY=... dsocr convert report.pdf -o out/ --engine openai --base-url https://host/v1 --model NAME

exit codes: 0 every page read; 1 some page or file failed (see the JSON and the warnings) or a layout
            PDF could not be written; 2 bad arguments or no inputs; 3 the engine is unusable (model not
            loadable or fetchable, server unreachable or refusing the key)
"""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ENGINE = 0, 1, 2, 3


def safe_name(name: str) -> str:
    """A file name stem that cannot leave the output folder (no separators, no dots-only, no controls)."""
    stem = Path(name.replace("\\", "/")).name
    stem = re.sub(r"[^\w.\- ]+", "_", stem).strip(" .")
    return stem[:120] or "document"


def _version() -> str:
    try:
        return version("dsocr")
    except PackageNotFoundError:
        return "unknown"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help, the examples kept as written."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dsocr", description="DeepSeek-OCR for documents: PDFs and images to markdown.")
    ap.add_argument("--version", action="version", version=f"dsocr {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert PDFs/images (files or folders) to markdown and JSON",
                       description="Convert PDFs and images to markdown/JSON with DeepSeek-OCR.",
                       formatter_class=_HelpFormatter, epilog=EXAMPLES)
    c.add_argument("inputs", nargs="+", help="PDF or image files, or folders of them")
    c.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    c.add_argument("--task", default=None, help="official prompt by name (default: the model's, markdown): "
                   "markdown, ocr, free_ocr, figure, describe, locate (v1, DeepSeek-OCR-2); Unlimited-OCR: markdown")
    c.add_argument("--locate-text", default=None, help="text to find with --task locate")
    c.add_argument("--mode", default=S.default_mode(), help=f"resolution mode of the model (None: its own, gundam "
                   f"for v1; $DSOCR_MODE); registered: {', '.join(known_modes())}")
    c.add_argument("--pages", default=None, help='pages to read, 1-based: "1-3,7"')
    c.add_argument("--on-suspect", default=S.DEFAULT_ON_SUSPECT, choices=("keep", "retry"), help="pages whose quality verdict is "
                   "not good (counted as suspect in the summary): keep them, or retry once with a stricter guard")
    c.add_argument("--chunk-tokens", type=int, default=S.DEFAULT_CHUNK_TOKENS,
                   help="token budget of the heading-aware chunks listed in the JSON")
    c.add_argument("--pages-per-pass", type=int, default=1, help="Unlimited-OCR: read up to N pages of a file in "
                   "one pass (its multi-page mode), split back per page")
    c.add_argument("--dpi", type=float, default=S.DEFAULT_DPI, help="PDF rendering resolution (official: 144)")
    c.add_argument("--password", default=None, help="password of encrypted PDFs")
    c.add_argument("--engine", default="local", choices=(*S.ENGINES, "ray"),
                   help="local: run the model here; openai: an OpenAI-compatible server (vLLM, SGLang) at --base-url; "
                        "ray: a Ray Data job over the cluster's GPUs (needs dsocr[ray]; resumable, OUT/ray holds its rows)")
    c.add_argument("--address", default=None, help="--engine ray: the cluster to join (auto, ray://...); default: "
                   "a local one")
    c.add_argument("--num-gpus", type=int, default=None, help="--engine ray: OCR actors, one GPU each (default: every "
                   "GPU of the cluster; 0: one actor on CPUs)")
    c.add_argument("--base-url", default=None,
                   help="server for --engine openai, e.g. http://localhost:8000/v1 (default: $DSOCR_BASE_URL); "
                        "API key from $DSOCR_API_KEY or $OPENAI_API_KEY")
    c.add_argument("--concurrency", type=int, default=8, help="requests in flight with --engine openai")
    c.add_argument("--timeout", type=float, default=600, help="seconds per request with --engine openai")
    c.add_argument("--model", default=S.default_model(),
                   help="hub id or local checkpoint folder (local), or the served model name (openai); $DSOCR_MODEL")
    c.add_argument("--device", default=S.default_device(), help="auto | cuda | cuda:N | cpu (local engine); "
                   "$DSOCR_DEVICE")
    c.add_argument("--max-new-tokens", type=int, default=S.DEFAULT_MAX_NEW_TOKENS,
                   help="token limit per page (capped to the model's context minus the prompt)")
    c.add_argument("--format", default="md,json", help="comma-separated: md, json")
    c.add_argument("--figures", action="store_true", help="save figure crops next to the markdown")
    c.add_argument("--layout", action="store_true", help="write NAME_layouts.pdf: pages with boxes drawn and labelled")
    c.add_argument("--table-format", default=S.DEFAULT_TABLE_FORMAT, choices=S.TABLE_FORMATS,
                   help="tables as the model writes them (html) or as pipe tables")
    c.add_argument("--pages-delimiter", default=S.PAGES_DELIMITER,
                   help='joins pages in NAME.md (default: %(default)r, a form feed as LangChain\'s PDF loaders; '
                        'the official .mmd uses "\\n<--- Page Split --->\\n")')
    c.add_argument("--cache-dir", default=None, help="result cache folder; None: $DSOCR_CACHE_DIR, else ~/.cache/dsocr")
    c.add_argument("--no-cache", action="store_true", help="OCR every page again")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.add_argument("-v", "--verbose", action="count", default=0, help="more log lines: -v info, -vv debug")
    c.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (overrides -v); default WARNING, with the model loading line shown")
    v = sub.add_parser("serve", help="serve the model over an OpenAI-compatible API (needs dsocr[serve])",
                       description="An OpenAI-compatible chat-completions server over the batching engine, taking "
                                   "vLLM's DeepSeek-OCR requests.", formatter_class=_HelpFormatter)
    v.add_argument("--model", default=S.default_model(), help="hub id or local checkpoint folder; $DSOCR_MODEL")
    v.add_argument("--device", default=S.default_device(), help="auto | cuda | cuda:N | cpu")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--served-model-name", default=None, help="the name /v1/models lists (default: --model)")
    v.add_argument("--api-key", default=None, help="require this bearer key (default: $DSOCR_API_KEY, else none)")
    v.add_argument("--max-in-flight", type=int, default=None,
                   help="requests admitted at once; more get 429 (default: as many pages as the engine holds)")
    v.add_argument("--max-batch", type=int, default=None, help="pages decoded together (default: memory plan)")
    v.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs clients send")
    v.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    v.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_compress_commands(sub, _HelpFormatter)
    return ap


def convert_with_ray(args: argparse.Namespace, out: Path, formats: set[str]) -> int:
    """`--engine ray`: the Ray Data job into OUT/ray (rows per page, resumable), then the usual files per input."""
    try:
        import ray

        from .ray_job import run_job
    except ImportError as e:
        print(f"dsocr: {e}", file=sys.stderr)
        return EXIT_USAGE
    from ..ocr.parquet import read_results

    ray.init(address=args.address, ignore_reinit_error=True, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if args.num_gpus is None else args.num_gpus
    ocr = {"task": args.task, "locate_text": args.locate_text, "mode": args.mode, "max_new_tokens": args.max_new_tokens}
    summary = run_job(args.inputs, out / "ray", model=args.model, device=args.device if gpus else "cpu", ocr=ocr,
                      dpi=args.dpi, table_format=args.table_format, num_gpus=1 if gpus else 0, num_actors=max(gpus, 1))
    pages = [r for r, _, _ in read_results(out / "ray")]
    used: set[str] = set()
    for _, group in groupby(pages, key=lambda r: r.source):
        _write(out, list(group), formats, args, used)
    failed = sum(r.status == "error" for r in pages)
    print(f"dsocr: {len(pages)} pages with Ray in {summary['seconds']:.1f} s: {failed} failed, "
          f"{summary['resumed']} resumed, {summary['reconciled']} lost with crashed workers -> {out}")
    return EXIT_FAILED if failed else EXIT_OK


def run_server(args: argparse.Namespace) -> int:
    import os

    try:
        from .server import serve
    except ImportError as e:
        print(f"dsocr: {e}", file=sys.stderr)
        return EXIT_USAGE
    serve(args.model, device=args.device, host=args.host, port=args.port, served_model_name=args.served_model_name,
          engine_options={"max_batch": args.max_batch}, api_key=args.api_key or os.environ.get("DSOCR_API_KEY"),
          max_in_flight=args.max_in_flight, allow_remote_images=args.allow_remote_images)
    return EXIT_OK


def convert(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..ocr.cache import ResultCache
    from ..ocr.errors import DsocrInputError, EngineUnavailableError
    from ..ocr.pipeline import OCRPipeline
    from ..ocr.sources import count_pages, iter_inputs

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not formats or formats - {"md", "json"}:
        print(f"dsocr: --format takes md and/or json, got {args.format!r}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.engine == "ray":
        return convert_with_ray(args, out, formats)
    cache = None if args.no_cache else ResultCache(Path(args.cache_dir) / "results.sqlite" if args.cache_dir else None)
    options = {"concurrency": args.concurrency, "timeout": args.timeout} if args.engine == "openai" else {}
    try:
        engine = S.EngineSettings(args.model, args.device, args.engine, args.base_url, options=options)
        ocr = S.OCRSettings(task=args.task, locate_text=args.locate_text, mode=args.mode,
                            max_new_tokens=args.max_new_tokens, pages_per_pass=args.pages_per_pass)
        pipe = OCRPipeline(engine, ocr=ocr, render=S.RenderSettings(dpi=args.dpi),
                           output=S.OutputSettings(args.table_format, args.figures), on_error="page", cache=cache,
                           on_suspect=args.on_suspect)
        if not any(True for _ in iter_inputs(args.inputs, pipe.render.glob)):
            print(f"dsocr: no PDF or image files in {' '.join(args.inputs)}", file=sys.stderr)
            return EXIT_USAGE
        total = count_pages(args.inputs, args.pages, password=args.password, on_error="page")  # for the bar's ETA
    except (ValueError, FileNotFoundError) as e:  # DsocrInputError is a ValueError
        print(f"dsocr: {e}", file=sys.stderr)
        return EXIT_USAGE
    counts = {"ok": 0, "truncated": 0, "empty": 0, "error": 0}
    cached = lost_layouts = suspect = 0
    load_s: float | None = None
    used: set[str] = set()
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="page", disable=args.quiet, dynamic_ncols=True)
    try:
        current, pages = None, []
        for r in pipe.run(args.inputs, pages=args.pages, password=args.password, on_error="page", several=True,
                          password_hint="--password"):
            if r.source != current and pages:
                lost_layouts += not _write(out, pages, formats, args, used)
                pages = []
            current = r.source
            pages.append(r)
            counts[r.status] = counts.get(r.status, 0) + 1
            cached += bool(r.timings.get("cache_hit"))  # failures were logged once, where they happened
            suspect += r.quality is not None and r.quality.verdict != "good"
            if load_s is None and getattr(pipe._engine, "load_s", None):
                load_s = pipe._engine.load_s  # the model's load is not page time: keep it out of pages/s and ETA
                if not bar.disable:  # a disabled bar (-q) keeps no clock
                    bar.start_t += load_s
            bar.update(1)
        if pages:
            lost_layouts += not _write(out, pages, formats, args, used)
    except EngineUnavailableError as e:
        bar.close()
        print(f"dsocr: the engine is unusable: {e}", file=sys.stderr)
        return EXIT_ENGINE
    except (DsocrInputError, FileNotFoundError) as e:
        bar.close()
        print(f"dsocr: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        pipe.close()
    bar.close()
    total = sum(counts.values())
    dt = time.perf_counter() - t0
    failed = counts["error"]
    print(f"dsocr: {total} pages in {dt:.1f} s" + (f" (model load {load_s:.1f} s)" if load_s else "") +
          f": {counts['ok']} ok, {counts['truncated']} truncated, "
          f"{counts['empty']} empty, {failed} failed, {suspect} suspect, {cached} from cache -> {out}"
          + (f"; {lost_layouts} layout PDFs could not be written" if lost_layouts else ""))
    return EXIT_FAILED if failed or lost_layouts else EXIT_OK


def _write(out: Path, pages: list, formats: set[str], args: argparse.Namespace, used: set[str]) -> bool:
    """Write one document's files; False when its layout PDF could not be written (the rest still is)."""
    stem = safe_name(Path(pages[0].source or "document").stem)
    base, k = stem, 1
    while stem in used:  # two inputs with the same name: a.pdf, a_2.pdf
        k += 1
        stem = f"{base}_{k}"
    used.add(stem)
    if args.figures:
        from ..ocr.ids import save_figures

        for r in pages:  # links and JSON image_name relative to the markdown: NAME_images/NAME_{page}_{k}.jpg
            save_figures(r, out / f"{stem}_images", stem, link_base=f"{stem}_images")
    if "md" in formats and not all(r.is_file_error for r in pages):  # no empty .md for a file with no page
        (out / f"{stem}.md").write_text(args.pages_delimiter.join(r.markdown for r in pages), encoding="utf-8")
    if "json" in formats:
        doc = {"source": pages[0].source, "pages": [r.to_dict() for r in pages],
               "chunks": [c.to_dict() for c in chunk_pages(pages, chunk_tokens=args.chunk_tokens)]}
        (out / f"{stem}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.layout and not all(r.is_file_error for r in pages):
        from .layout import write_layout_pdf

        try:
            write_layout_pdf(pages, out / f"{stem}_layouts.pdf", password=args.password)
        except Exception as e:  # a side product: never worth the rest of the batch
            logging.getLogger("dsocr").warning("%s: layout PDF not written: %s", pages[0].source, e)
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    level = getattr(args, "log_level", None) or ("DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if level == "WARNING":  # loading a model takes minutes: say what is loaded from where, and how long it took
        logging.getLogger("dsocr_loaders.ocr.engines").setLevel(logging.INFO)
    if args.command in ("render", "compress-study"):
        return run_compress(args)
    return run_server(args) if args.command == "serve" else convert(args)
