"""DeepSeek-OCR-2 (`deepseek-ai/DeepSeek-OCR-2`, Apache-2.0): its spec. Source: FAMILY.md §2.

One resolution recipe: a 1024 global view (padded with grey) plus, when a side exceeds 768, 2-6 tiles of
768 chosen by v1's grid rule. The Qwen2-style encoder reads 256 learned queries for the global view and 144
per tile; the image block is flat (tiles in crop order, then the global view, then one separator; no
newlines): 257 + 144·k placeholders. "base" is the global view alone, what the model sees for any page
that needs no tiles. Tokenizer, prompts, grounding syntax and guards are v1's (the official vLLM scripts:
20 within 90 for images, 20 within 50 for PDFs, sparing <td>/</td>).
"""
from __future__ import annotations

from .deepseek_ocr import DEEPSEEK_OCR
from .spec import Guard, Mode, ModelSpec

DEEPSEEK_OCR2 = ModelSpec(
    name="deepseek-ocr-2",
    modes={"gundam": Mode(1024, 768, True), "base": Mode(1024, 1024, False)},
    default_mode="gundam",
    prompts=dict(DEEPSEEK_OCR.prompts),
    layout="flat",
    tile_threshold=768,
    max_crops=6,
    crop_limit=6,  # every official path caps at 6; the encoder has no query table for other sizes
    token_ids=dict(DEEPSEEK_OCR.token_ids),
    guard_whitelist=DEEPSEEK_OCR.guard_whitelist,
    document_guard=Guard(20, 50),
    image_guard=Guard(20, 90),
    grounding_tasks=DEEPSEEK_OCR.grounding_tasks,
    padded_sides=(1024,),
)
