"""OCR tasks -> the official prompts (ARCHITECTURE.md §5.4), and the settings that shape a page's output.

`OCRSettings` is everything that changes what the model writes for a given page image; its `key()` is
what a result cache keys on (with the page image and the model identity).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

TASK_PROMPTS = {
    "markdown": "<image>\n<|grounding|>Convert the document to markdown.",  # layout + markdown (default)
    "ocr": "<image>\n<|grounding|>OCR this image.",  # grounded OCR of a non-document image
    "free_ocr": "<image>\nFree OCR.",  # text only, no layout
    "figure": "<image>\nParse the figure.",
    "describe": "<image>\nDescribe this image in detail.",
    "locate": "<image>\nLocate <|ref|>{text}<|/ref|> in the image.",  # needs locate_text
}
GROUNDED_TASKS = {"markdown", "ocr", "locate"}
TABLE_TOKENS = (128821, 128822)  # <td>, </td>: exempt from the n-gram guard (official whitelist)


def build_prompt(task: str = "markdown", *, prompt: str | None = None, locate_text: str | None = None) -> str:
    """The prompt for `task`; `prompt` (raw, must hold one `<image>`) overrides it."""
    if prompt is not None:
        if prompt.count("<image>") != 1:
            raise ValueError("a raw prompt must contain exactly one '<image>' (e.g. '<image>\\nFree OCR.')")
        return prompt
    if task not in TASK_PROMPTS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_PROMPTS)} or pass prompt=")
    if task == "locate":
        if not locate_text:
            raise ValueError("task='locate' needs locate_text= (the text to find)")
        return TASK_PROMPTS[task].format(text=locate_text)
    return TASK_PROMPTS[task]


@dataclass(frozen=True)
class OCRSettings:
    """Official defaults: Gundam mode with up to 6 tiles, PDF script's n-gram guard (20 within 50)."""

    task: str = "markdown"
    prompt: str | None = None
    locate_text: str | None = None
    mode: str = "gundam"  # tiny | small | base | large | gundam | gundam-m
    max_crops: int = 6
    max_new_tokens: int = 8192  # capped to the model's 8192-token context minus the prompt
    ngram_size: int | None = 20  # None: no guard
    window_size: int = 50
    whitelist: tuple[int, ...] = field(default=TABLE_TOKENS)

    def __post_init__(self) -> None:
        from dsocr_model.modes import MODES  # torch-free

        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {sorted(MODES)}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        self.resolved_prompt()  # validate task / prompt now, not at the first page

    def resolved_prompt(self) -> str:
        return build_prompt(self.task, prompt=self.prompt, locate_text=self.locate_text)

    @property
    def grounded(self) -> bool:
        return "<|grounding|>" in self.resolved_prompt() or self.task == "locate"

    def key(self) -> str:
        """A stable digest of everything that changes the model's output."""
        d = asdict(self)
        d["prompt"] = self.resolved_prompt()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
