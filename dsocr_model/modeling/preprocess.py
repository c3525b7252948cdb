"""Image -> views (global view + Gundam tiles), pixel-exact with the official processors.

Re-implements the behaviour of DeepSeek-OCR `process/image_process.py` (vLLM path) and
`modeling_deepseekocr.py::infer` (HF path); ARCHITECTURE.md §2. The two paths differ only in the
tile cap (`max_crops` 6 vs 9).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image, ImageOps

from ..family.deepseek_ocr import DEEPSEEK_OCR
from ..family.spec import ModelSpec

PAD_COLOR = (127, 127, 127)  # tuple(int(0.5 * 255)) for mean 0.5: mid-grey, not black


@dataclass
class ImageViews:
    """Normalised views of one image, ready for the vision encoder.

    global_view: float32 [3, S, S]; tiles: float32 [P, 3, s, s] with P = nw*nh (0 when untiled); both may
    instead be raw uint8 pixels, which the encoder normalises on its device (preprocess_image(normalize=False));
    grid: (nw, nh) tile columns and rows, (1, 1) when untiled; spec: the architecture whose token layout
    counts this image's placeholders.
    """

    global_view: torch.Tensor
    tiles: torch.Tensor | None = None
    grid: tuple[int, int] = (1, 1)
    spec: ModelSpec = DEEPSEEK_OCR

    def __post_init__(self) -> None:
        g = self.global_view
        if g.dim() != 3 or g.shape[0] != 3 or g.shape[1] != g.shape[2]:
            raise ValueError(f"global_view must be [3, S, S], got {tuple(g.shape)}")
        nw, nh = (int(v) for v in self.grid)
        self.grid = (nw, nh)
        if self.tiles is None:
            self.tiles = g.new_zeros((0, 3, g.shape[1], g.shape[2]))
        t = self.tiles
        if t.dim() != 4 or t.shape[1] != 3 or t.shape[2] != t.shape[3]:
            raise ValueError(f"tiles must be [P, 3, s, s], got {tuple(t.shape)}")
        tiled = nw > 1 or nh > 1
        if tiled and t.shape[0] != nw * nh:
            raise ValueError(f"grid {self.grid} needs {nw * nh} tiles, got {t.shape[0]}")
        if not tiled and t.shape[0] != 0:
            raise ValueError(f"grid {self.grid} means untiled, but {t.shape[0]} tiles were given")

    @property
    def is_tiled(self) -> bool:
        return self.tiles.shape[0] > 0

    @property
    def num_image_tokens(self) -> int:
        tile = self.tiles.shape[-1] if self.is_tiled else 0
        return self.spec.count_tokens(self.global_view.shape[-1], tile, self.grid if self.is_tiled else (1, 1))

    def to(self, device=None, dtype=None) -> "ImageViews":
        """Views on `device` in `dtype`; uint8 views asked for a floating dtype are normalised on the way (a
        plain cast would hand the encoder raw 0..255 pixels)."""
        def move(x: torch.Tensor) -> torch.Tensor:
            if x.dtype == torch.uint8 and dtype is not None and dtype.is_floating_point:
                x = normalize_pixels(x.to(device))
            return x.to(device=device, dtype=dtype)

        return ImageViews(move(self.global_view), move(self.tiles), self.grid, self.spec)


def normalize_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any layout) -> float32 in [-1, 1] as ToTensor + Normalize(0.5, 0.5), on the tensor's device.

    Divide, subtract, divide: bit-identical to the reference (a fused `x * 2/255 - 1` is not), on CPU and GPU
    alike (IEEE fp32 division), so views may travel as uint8 and be normalised where they are encoded.
    """
    return x.float().div(255).sub(0.5).div(0.5)


def to_tensor(image: Image.Image, normalize: bool = True) -> torch.Tensor:
    """uint8 HWC -> CHW: float32 normalised to [-1, 1], or the raw uint8 (`normalize=False`)."""
    u8 = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = u8.view(image.height, image.width, 3).permute(2, 0, 1)
    return normalize_pixels(x) if normalize else x.contiguous()


def tile_image(image: Image.Image, grid: tuple[int, int], tile_size: int) -> list[Image.Image]:
    """Stretch-resize to (cols*s, rows*s) ignoring aspect, cut row-major into s x s tiles."""
    cols, rows = grid
    resized = image.resize((cols * tile_size, rows * tile_size))
    return [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]


def preprocess_image(image: Image.Image, mode: str | None = None, max_crops: int | None = None,
                     spec: ModelSpec = DEEPSEEK_OCR, *, normalize: bool = True) -> ImageViews:
    """One RGB page image -> ImageViews for a `mode` of `spec` (v1: tiny/small/base/large/gundam/gundam-m).

    `max_crops` caps the tile count (v1: 6 as the official PDF pipeline and vLLM, the default; 9 as HF
    `infer()`). The caller is expected to have applied EXIF orientation (the loaders do). `normalize=False`
    keeps the views as uint8 (a quarter of the memory while a page waits; the encoder normalises them on its
    device with the same arithmetic, so the result is bit-identical).
    """
    m = spec.mode(mode)
    max_crops = spec.check_crops(spec.max_crops if max_crops is None else max_crops)
    if image.width < 1 or image.height < 1:
        raise ValueError(f"empty image {image.size}")
    if image.mode != "RGB":
        image = image.convert("RGB")

    if not m.crop_mode:
        if m.image_size <= spec.stretch_below:  # v1 tiny/small stretch to a square; base/large pad with grey
            image = image.resize((m.image_size, m.image_size))
        return ImageViews(to_tensor(ImageOps.pad(image, (m.image_size, m.image_size), color=PAD_COLOR), normalize),
                          spec=spec)

    global_view = to_tensor(ImageOps.pad(image, (m.base_size, m.base_size), color=PAD_COLOR), normalize)
    grid = spec.view_grid(image.width, image.height, mode, max_crops)
    if grid == (1, 1):
        return ImageViews(global_view, spec=spec)
    tiles = torch.stack([to_tensor(t, normalize) for t in tile_image(image, grid, m.image_size)])
    return ImageViews(global_view, tiles, grid, spec)
