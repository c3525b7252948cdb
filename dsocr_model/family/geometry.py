"""Tile geometry: pure arithmetic shared by every architecture's spec (no torch, no PIL).

The grid rule is the official `dynamic_preprocess` (ARCHITECTURE.md §2.3): among all (cols, rows) with
min <= cols*rows <= max, the one whose aspect is closest to the image's; token counts per view side
follow SAM's patch 16 and the 4x conv compressor (1024 -> 16).
"""
from __future__ import annotations

import math


def tokens_per_side(view_size: int, patch_size: int = 16, downsample: int = 4) -> int:
    """Vision tokens per side of a square view: patch 16, then 4x by net_2/net_3 (1024 -> 16)."""
    return math.ceil((view_size // patch_size) / downsample)


def candidate_grids(max_crops: int, min_crops: int = 2) -> list[tuple[int, int]]:
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


def choose_grid(width: int, height: int, tile_size: int, max_crops: int, min_crops: int = 2) -> tuple[int, int]:
    """Grid whose aspect is closest to the image's; exact ties go to the larger grid for big images."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(max_crops, min_crops):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def grid_layout_tokens(global_q: int, tile_q: int, grid: tuple[int, int]) -> int:
    """v1 layout: [tiles stitched, newline per row] + [global rows + newline each] + separator."""
    n = global_q * (global_q + 1) + 1
    cols, rows = grid
    if cols * rows > 1:
        n += (tile_q * rows) * (tile_q * cols + 1)
    return n


def flat_layout_tokens(global_q: int, tile_q: int, grid: tuple[int, int]) -> int:
    """Flat layout: every tile's q*q tokens in crop order, the global view's, one separator; no newlines."""
    cols, rows = grid
    tiles = cols * rows if cols * rows > 1 else 0
    return tiles * tile_q * tile_q + global_q * global_q + 1


LAYOUTS = {"grid": grid_layout_tokens, "flat": flat_layout_tokens}
