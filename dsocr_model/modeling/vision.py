"""DeepEncoder fusion and the image-token block (ARCHITECTURE.md §3.3-3.4).

features = Linear(cat[CLIP(SAM(x))[:, 1:], SAM(x)])  — CLIP first, SAM second.
Block per image, in the layout its spec names: "grid" (v1) stitches the tiles into one grid with
`image_newline` after each row (only when tiled), then the global view's rows each followed by
`image_newline`, then one `view_seperator` (sic); "flat" (DeepSeek-OCR-2 style) writes each tile's tokens
in crop order, then the global view's, then the separator, with no newlines.
Views of many images are encoded together, batched by view size.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from .clip import ClipEncoder
from .preprocess import ImageViews, normalize_pixels
from .sam import SamEncoder


class Projector(nn.Module):
    """`model.projector.layers` is a single Linear(2048 -> 1280) (projector_type "linear")."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def encode_views(sam: SamEncoder, clip: ClipEncoder, projector: Projector, pixels: torch.Tensor) -> torch.Tensor:
    """[N, 3, S, S] -> [N, q*q, hidden] with q = S/64."""
    s = sam(pixels)  # (N, C, q, q)
    c = clip(s)  # (N, 1 + q*q, C)
    feats = torch.cat([c[:, 1:], s.flatten(2).transpose(1, 2)], dim=-1)  # (N, q*q, 2C)
    return projector(feats)


def with_newlines(grid: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """[rows, cols, C] -> [rows * (cols + 1), C]: a newline vector closes every row."""
    rows, _, C = grid.shape
    nl = newline.to(grid.dtype).view(1, 1, C).expand(rows, 1, C)
    return torch.cat([grid, nl], dim=1).reshape(-1, C)


def flat_layout(global_feats: torch.Tensor, tile_feats: torch.Tensor | None, grid: tuple[int, int],
                newline: torch.Tensor | None, separator: torch.Tensor) -> torch.Tensor:
    """global [q*q, C], tiles [P, q2*q2, C] -> [P*q2*q2 + q*q + 1, C]: tiles, global, separator."""
    C = global_feats.shape[-1]
    parts = [tile_feats.reshape(-1, C)] if tile_feats is not None and tile_feats.shape[0] > 0 else []
    return torch.cat(parts + [global_feats, separator.to(global_feats.dtype).view(1, C)], dim=0)


def grid_layout(global_feats: torch.Tensor, tile_feats: torch.Tensor | None, grid: tuple[int, int],
                newline: torch.Tensor, separator: torch.Tensor) -> torch.Tensor:
    """global [q*q, C], tiles [P, q2*q2, C] -> the block written over one image's placeholders."""
    C = global_feats.shape[-1]
    q = int(global_feats.shape[0] ** 0.5)
    parts = []
    if tile_feats is not None and tile_feats.shape[0] > 0:
        nw, nh = grid
        q2 = int(tile_feats.shape[1] ** 0.5)
        tiles = tile_feats.view(nh, nw, q2, q2, C).permute(0, 2, 1, 3, 4)  # (nh, q2, nw, q2, C)
        parts.append(with_newlines(tiles.reshape(nh * q2, nw * q2, C), newline))
    parts.append(with_newlines(global_feats.view(q, q, C), newline))
    parts.append(separator.to(global_feats.dtype).view(1, C))
    return torch.cat(parts, dim=0)


LAYOUTS = {"grid": grid_layout, "flat": flat_layout}  # the torch side of family.geometry.LAYOUTS


def upload(views: list[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Same-size views [3, S, S] -> one batch on the encoder's device, in its dtype. uint8 views travel as they
    are (a quarter of fp32's bytes), from pinned memory without blocking the host on CUDA, and are normalised
    there; a batch mixing them with normalised views normalises its uint8 ones first."""
    if any(v.dtype != torch.uint8 for v in views):
        views = [normalize_pixels(v) if v.dtype == torch.uint8 else v for v in views]
        return torch.stack(views).to(device=device, dtype=dtype)
    pixels = torch.stack(views)
    if device.type == "cuda" and not pixels.is_pinned():
        pixels = pixels.pin_memory()
    return normalize_pixels(pixels.to(device, non_blocking=True)).to(dtype)


MAX_VIEWS_PER_BATCH = 32  # views per SAM/CLIP forward: CLIP's small GEMMs are launch-bound at 16 (H200)


def encode_images(model, images: list[ImageViews], max_views_per_batch: int | None = None) -> list[torch.Tensor]:
    """All views of all images, batched by size through SAM/CLIP/projector, then laid out per image.

    `model` is the `model.` backbone: its `encode_views` turns square views into tokens, and it holds the
    projector, `view_seperator` and (grid layout) `image_newline`. Returns one [num_image_tokens, hidden]
    tensor per image, in order.
    """
    max_views_per_batch = max_views_per_batch or MAX_VIEWS_PER_BATCH
    dtype = model.projector.layers.weight.dtype
    device = model.projector.layers.weight.device
    # (image index, kind, tensor) grouped by spatial size so each batch has one shape.
    by_size: dict[int, list[tuple[int, str, torch.Tensor]]] = defaultdict(list)
    for i, v in enumerate(images):
        by_size[v.global_view.shape[-1]].append((i, "global", v.global_view[None]))
        if v.is_tiled:
            by_size[v.tiles.shape[-1]].append((i, "tiles", v.tiles))
    outputs: dict[tuple[int, str], list[torch.Tensor]] = defaultdict(list)
    for items in by_size.values():
        flat = [(i, kind, t[j]) for i, kind, t in items for j in range(t.shape[0])]
        for start in range(0, len(flat), max_views_per_batch):
            chunk = flat[start:start + max_views_per_batch]
            pixels = upload([p for _, _, p in chunk], device, dtype)
            feats = model.encode_views(pixels)
            for (i, kind, _), f in zip(chunk, feats):
                outputs[(i, kind)].append(f)
    blocks = []
    for i, v in enumerate(images):
        tiles = torch.stack(outputs[(i, "tiles")]) if v.is_tiled else None
        layout = LAYOUTS[v.spec.layout]
        blocks.append(layout(outputs[(i, "global")][0], tiles, v.grid, getattr(model, "image_newline", None),
                             model.view_seperator))
    return blocks
