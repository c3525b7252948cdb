"""ModelSpec: everything a caller asks of an architecture without loading it (torch-free).

Resolution modes and tile limits, the image-token layout and its counts, special tokens, the official
prompts and n-gram guard defaults, the box syntax and the context length. The loaders, the CLI and the
model itself ask the spec of the loaded checkpoint instead of hard-wiring DeepSeek-OCR v1's numbers.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .geometry import LAYOUTS, choose_grid, tokens_per_side

DEFAULT_MAX_NEW_TOKENS = 8192  # the official scripts' limit; engines cap it to the context minus the prompt
MAX_GUARD_WINDOW = 1024  # the longest n-gram window the batched guard looks back over (official: 50, 90, 128; 1024)


@dataclass(frozen=True)
class Mode:
    base_size: int  # global view side (crop modes) or the one view's side
    image_size: int  # tile side (crop modes); equals base_size otherwise
    crop_mode: bool  # tiles beside the global view when the page is larger than the tile threshold


@dataclass(frozen=True)
class Guard:
    """The official windowed no-repeat n-gram guard: ngram_size None turns it off."""

    ngram_size: int | None
    window_size: int | None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    modes: Mapping[str, Mode]
    default_mode: str
    prompts: Mapping[str, str]  # task name -> prompt with one "<image>"
    default_task: str = "markdown"
    layout: str = "grid"  # a key of geometry.LAYOUTS: how views become image-token rows
    tile_threshold: int = 640  # tiling happens only when a side exceeds this
    min_crops: int = 2
    max_crops: int = 6  # default tile cap (official PDF pipeline and vLLM)
    crop_limit: int = 9  # the largest cap the model was used with (HF infer())
    stretch_below: int = 640  # untiled views up to this side are stretched to a square, larger ones padded
    patch_size: int = 16
    downsample: int = 4
    image_token: str = "<image>"
    token_ids: Mapping[str, int] = field(default_factory=dict)  # official ids, for engines without a tokenizer
    guard_whitelist: tuple[str, ...] = ()  # tokens the n-gram guard never bans
    document_guard: Guard = Guard(None, None)  # the official PDF script's guard
    image_guard: Guard = Guard(None, None)  # the official single-image script's guard
    grounding_tasks: tuple[str, ...] = ()  # tasks whose output carries boxes
    box_syntax: str = "ref_det"  # how boxes are written: the grounding parser's dialect
    context_length: int = 8192
    padded_sides: tuple[int, ...] = (1024, 1280)  # global sides whose padding test_compress discounts
    # Several pages in one pass (Unlimited-OCR): every page in `multi_page_mode`, the prompt is one
    # "<image>" per page followed by `multi_page_prompt`, the answer marks each page with `page_marker`.
    multi_page_prompt: str | None = None
    multi_page_mode: str | None = None
    multi_page_guard: Guard = Guard(None, None)
    page_marker: str = "<PAGE>"

    def __post_init__(self) -> None:
        if self.default_mode not in self.modes:
            raise ValueError(f"{self.name}: default_mode {self.default_mode!r} is not one of its modes")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: unknown layout {self.layout!r}; known: {sorted(LAYOUTS)}")
        if self.default_task not in self.prompts:
            raise ValueError(f"{self.name}: default_task {self.default_task!r} has no prompt")
        if self.multi_page_prompt is not None and self.multi_page_mode not in self.modes:
            raise ValueError(f"{self.name}: multi_page_mode {self.multi_page_mode!r} is not one of its modes")

    @property
    def multi_page(self) -> bool:
        """Reads several pages in one pass (split on `page_marker` afterwards)."""
        return self.multi_page_prompt is not None

    def multi_page_prompt_for(self, pages: int) -> str:
        """The multi-page prompt for `pages` images: one image tag per page, then the instruction."""
        if not self.multi_page:
            raise ValueError(f"{self.name} reads one page per pass (pages_per_pass must be 1)")
        return self.image_token * pages + self.multi_page_prompt

    # ---- modes and tiles ---------------------------------------------------------------------------
    def mode(self, name: str | None) -> Mode:
        """The named mode (None: the default), or a ValueError listing this model's modes."""
        name = self.default_mode if name is None else name
        if name not in self.modes:
            raise ValueError(f"unknown mode {name!r} for {self.name}; choose one of {sorted(self.modes)}")
        return self.modes[name]

    def check_crops(self, max_crops: int) -> int:
        if not self.min_crops <= max_crops <= self.crop_limit:
            raise ValueError(f"max_crops must be in {self.min_crops}..{self.crop_limit} for {self.name}, got {max_crops}")
        return max_crops

    def view_grid(self, width: int, height: int, mode: str | None = None, max_crops: int | None = None) -> tuple[int, int]:
        """The tile grid (cols, rows) preprocessing picks for an image of this size; (1, 1) when untiled."""
        m = self.mode(mode)
        if not m.crop_mode or (width <= self.tile_threshold and height <= self.tile_threshold):
            return (1, 1)
        return choose_grid(width, height, m.image_size, max_crops or self.max_crops, self.min_crops)

    def side_tokens(self, view_size: int) -> int:
        return tokens_per_side(view_size, self.patch_size, self.downsample)

    def count_tokens(self, global_side: int, tile_side: int, grid: tuple[int, int]) -> int:
        """Placeholders for one image whose views have these sides, in this architecture's layout."""
        return LAYOUTS[self.layout](self.side_tokens(global_side), self.side_tokens(tile_side) if tile_side else 0, grid)

    def image_token_count(self, width: int, height: int, mode: str | None = None, max_crops: int | None = None) -> int:
        """Placeholder ids the prompt holds for one image of this size in `mode`."""
        m = self.mode(mode)
        if not m.crop_mode:
            return self.count_tokens(m.image_size, 0, (1, 1))
        return self.count_tokens(m.base_size, m.image_size, self.view_grid(width, height, mode, max_crops))

    def valid_vision_tokens(self, width: int, height: int, mode: str | None = None, max_crops: int | None = None) -> int:
        """Official `test_compress` count: padding discounted on large global views, no newline or separator
        tokens, plus the tiles' tokens (floor, as the code; the paper writes ceil)."""
        m = self.mode(mode)
        side = m.base_size if m.crop_mode else m.image_size
        q = self.side_tokens(side)
        ratio = min(width, height) / max(width, height)
        n = int(q * q * ratio) if side in self.padded_sides else q * q
        cols, rows = self.view_grid(width, height, mode, max_crops)
        if cols * rows > 1:
            n += self.side_tokens(m.image_size) ** 2 * cols * rows
        return n

    # ---- prompts, guard, tokens ---------------------------------------------------------------------
    def prompt(self, task: str | None = None, locate_text: str | None = None) -> str:
        """The official prompt of `task` (None: the default task)."""
        task = self.default_task if task is None else task
        if task not in self.prompts:
            raise ValueError(f"task {task!r} has no prompt for {self.name}; its tasks: {sorted(self.prompts)} "
                             f"(or pass prompt= explicitly)")
        template = self.prompts[task]
        if "{text}" in template:
            if not locate_text:
                raise ValueError(f"task={task!r} needs locate_text= (the text to find)")
            return template.format(text=locate_text)
        return template

    @property
    def whitelist_ids(self) -> tuple[int, ...]:
        """Official ids of the guard's whitelist (servers and engines without the tokenizer use these)."""
        return tuple(self.token_ids[t] for t in self.guard_whitelist if t in self.token_ids)

    @property
    def image_token_id(self) -> int | None:
        return self.token_ids.get(self.image_token)
