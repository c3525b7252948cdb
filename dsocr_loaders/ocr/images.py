"""Image decoding: open with a typed error, then EXIF orientation and any mode -> 8-bit RGB.

The model was trained on RGB pages; transparency is composited on white (a transparent PNG would
otherwise turn black), 16-bit and float greyscale are scaled to 8 bits, CMYK/palette/LAB go through
Pillow's converters.
"""
from __future__ import annotations

from typing import IO, Any

from .errors import CorruptFileError, TooLargeError, UnsupportedFormatError

MULTI_FRAME_FORMATS = {"TIFF", "MPO"}  # every frame a page; GIF/WebP/PNG animations: first frame only


def open_image(name: str, fp: str | IO[bytes]) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(fp)
    except Image.DecompressionBombError as e:  # Pillow's guard stays as the user set it: not changed globally
        raise TooLargeError(f"{name}: {e}") from e
    except UnidentifiedImageError as e:
        raise UnsupportedFormatError(f"{name} is neither a PDF nor an image format Pillow can read "
                                     f"(PNG, JPEG, WebP, TIFF, BMP, GIF)") from e
    try:
        image.load()  # decode now: a truncated or corrupt file fails here, with its name
    except Exception as e:
        raise CorruptFileError(f"{name} is a damaged {image.format} image: {e}") from e
    return image


def to_rgb(image: Any) -> Any:
    """The current frame of `image`, upright (EXIF) and as 8-bit RGB."""
    import numpy as np
    from PIL import Image, ImageOps

    frame = ImageOps.exif_transpose(image)
    mode = frame.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(frame, dtype=np.float64)
        top = 255.0 if a.max(initial=0) <= 255 else 65535.0 if a.max() <= 65535 else float(a.max())
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode != "RGB":
        return frame.convert("RGB")
    return frame.copy() if frame is image else frame
