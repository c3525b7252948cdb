"""DeepSeek-OCR v1 (`deepseek-ai/DeepSeek-OCR`): its spec. Sources: ARCHITECTURE.md §2-§6, §9.

Six resolution modes; Gundam tiles of 640 (1024 global) when a side exceeds 640, 2-6 tiles as the
official PDF pipeline and vLLM (9 in HF `infer()`); newline-per-row token layout; `<|ref|>`/`<|det|>`
boxes on a 0-999 grid; the PDF script's n-gram guard 20 within 50, the image script's 30 within 90,
both sparing `<td>`/`</td>`.
"""
from __future__ import annotations

from .spec import Guard, Mode, ModelSpec

DEEPSEEK_OCR = ModelSpec(
    name="deepseek-ocr",
    modes={
        "tiny": Mode(512, 512, False),
        "small": Mode(640, 640, False),
        "base": Mode(1024, 1024, False),
        "large": Mode(1280, 1280, False),
        "gundam": Mode(1024, 640, True),
        "gundam-m": Mode(1280, 1024, True),
    },
    default_mode="gundam",
    prompts={
        "markdown": "<image>\n<|grounding|>Convert the document to markdown.",  # layout + markdown (default)
        "ocr": "<image>\n<|grounding|>OCR this image.",  # grounded OCR of a non-document image
        "free_ocr": "<image>\nFree OCR.",  # text only, no layout
        "figure": "<image>\nParse the figure.",
        "describe": "<image>\nDescribe this image in detail.",
        "locate": "<image>\nLocate <|ref|>{text}<|/ref|> in the image.",  # needs locate_text
    },
    grounding_tasks=("markdown", "ocr", "locate"),
    token_ids={"<image>": 128815, "<td>": 128821, "</td>": 128822},
    guard_whitelist=("<td>", "</td>"),
    document_guard=Guard(20, 50),
    image_guard=Guard(30, 90),
)


def count_image_tokens(base_size: int, image_size: int, grid: tuple[int, int]) -> int:
    """v1 placeholders for one image: global rows + newlines + separator, then tiled rows + newlines."""
    return DEEPSEEK_OCR.count_tokens(base_size, image_size, grid)
