"""Resolution modes and token counts: pure arithmetic, no torch (the loaders use it without loading torch).

Mode geometry and the placeholder count follow ARCHITECTURE.md §2.3-§3.4; `valid_vision_tokens` is the
official `test_compress` statistic (§9).
"""
from __future__ import annotations

import math

TILE_THRESHOLD = 640  # tiling happens only when a side exceeds 640, whatever the tile size
MIN_CROPS = 2

# mode -> (base_size: global view side, image_size: tile side, crop_mode)
MODES: dict[str, tuple[int, int, bool]] = {
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "large": (1280, 1280, False),
    "gundam": (1024, 640, True),
    "gundam-m": (1280, 1024, True),
}


def tokens_per_side(view_size: int, patch_size: int = 16, downsample: int = 4) -> int:
    """Vision tokens per side of a square view: patch 16, then 4x by net_2/net_3 (1024 -> 16)."""
    return math.ceil((view_size // patch_size) / downsample)


def count_image_tokens(base_size: int, image_size: int, grid: tuple[int, int]) -> int:
    """Placeholders for one image: global rows + newlines + separator, then tiled rows + newlines."""
    q = tokens_per_side(base_size)
    n = q * (q + 1) + 1
    nw, nh = grid
    if nw > 1 or nh > 1:
        q2 = tokens_per_side(image_size)
        n += (q2 * nh) * (q2 * nw + 1)
    return n


def candidate_grids(max_crops: int, min_crops: int = MIN_CROPS) -> list[tuple[int, int]]:
    """All (cols, rows) with min <= cols*rows <= max, ordered by area.

    The reference sorts a Python *set*; the stable sort keeps the set's iteration order among grids of
    equal area, so build it the same way to break exact ties identically.
    """
    grids = set(
        (i, j)
        for n in range(min_crops, max_crops + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_crops <= i * j <= max_crops
    )
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, tile_size: int, max_crops: int) -> tuple[int, int]:
    """Grid whose aspect is closest to the image's; exact ties go to the larger grid for big images."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(max_crops):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def view_grid(width: int, height: int, mode: str, max_crops: int = 6) -> tuple[int, int]:
    """The tile grid preprocess_image picks for an image of this size; (1, 1) when untiled."""
    base_size, image_size, crop_mode = MODES[mode]
    if not crop_mode or (width <= TILE_THRESHOLD and height <= TILE_THRESHOLD):
        return (1, 1)
    return choose_grid(width, height, image_size, max_crops)


def image_token_count(width: int, height: int, mode: str, max_crops: int = 6) -> int:
    """Placeholder ids the prompt holds for one image of this size in `mode`."""
    base_size, image_size, crop_mode = MODES[mode]
    if not crop_mode:
        return count_image_tokens(image_size, 0, (1, 1))
    return count_image_tokens(base_size, image_size, view_grid(width, height, mode, max_crops))


def valid_vision_tokens(width: int, height: int, mode: str, max_crops: int = 6) -> int:
    """Official `test_compress` count: padding discounted on 1024/1280 global views, no newline or
    separator tokens, plus the tiles' tokens (floor, as the code; the paper writes ceil)."""
    base_size, image_size, crop_mode = MODES[mode]
    side = base_size if crop_mode else image_size
    ratio = min(width, height) / max(width, height)
    q = tokens_per_side(side)
    n = int(q * q * ratio) if side in (1024, 1280) else q * q
    nw, nh = view_grid(width, height, mode, max_crops)
    if nw * nh > 1:
        n += tokens_per_side(image_size) ** 2 * nw * nh
    return n
