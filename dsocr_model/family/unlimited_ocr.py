"""Unlimited-OCR (`baidu/Unlimited-OCR`, MIT): its spec. Source: FAMILY.md §3.

v1's DeepEncoder and token layout, with 2-32 Gundam tiles (1024 global + 640 tiles) for one page and the
1024 "base" view (273 placeholders) per page when several pages share one pass. Its decoder attends with
R-SWA (the whole prompt plus the last 128 generated tokens; `sliding_window` in config.json, read by the
model config, not here) within a 32,768-token context. One task, "document parsing."; several pages use
"<image>" per page then "Multi page parsing.", and every page's answer starts with a literal `<PAGE>`.
Boxes are written `<|det|>label [x0, y0, x1, y1]<|/det|>` on the 0-999 grid. The official guard: no
repeated 35-gram within the last 128 tokens (1024 for several pages), no whitelist.
"""
from __future__ import annotations

from .spec import Guard, Mode, ModelSpec

UNLIMITED_OCR = ModelSpec(
    name="unlimited-ocr",
    modes={"gundam": Mode(1024, 640, True), "base": Mode(1024, 1024, False)},
    default_mode="gundam",
    prompts={"markdown": "<image>document parsing."},
    max_crops=32,
    crop_limit=32,
    token_ids={"<image>": 128815},
    document_guard=Guard(35, 128),
    image_guard=Guard(35, 128),
    grounding_tasks=("markdown",),
    box_syntax="det_label",
    context_length=32768,
    multi_page_prompt="Multi page parsing.",
    multi_page_mode="base",
    multi_page_guard=Guard(35, 1024),
)
