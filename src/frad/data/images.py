"""Decoding image files to RGB uint8 arrays, with one clear error per bad file.

Grayscale, palette, RGBA/LA (alpha composited on black, as dlib's loader drops alpha),
CMYK, YCbCr and 16-bit images are converted to 8-bit RGB and the conversion is recorded;
an unreadable or truncated file raises :class:`~frad.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

__all__ = ["DecodedImage", "decode_image", "load_rgb", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Pillow's decompression-bomb guard, raised to a size no face photo reaches.
_MAX_PIXELS = 200_000_000


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels (H x W x 3, uint8) and what the file originally held."""

    pixels: np.ndarray
    mode: str
    converted: bool

    @property
    def note(self) -> str | None:
        return f"converted from {self.mode} to RGB" if self.converted else None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.round(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        raise ValueError("floating-point images are not supported (unknown value range)")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def decode_image(path: str | os.PathLike[str]) -> DecodedImage:
    """Read ``path`` fully and return its pixels as 8-bit RGB (EXIF rotation applied)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = _MAX_PIXELS
            with Image.open(path) as img:
                img.load()  # decode now so truncated files fail here, not later
                mode = img.mode
                img = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(img)
                pixels = np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: corrupt or unsupported image ({exc})") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise DataError(f"{path}: decoded to an unexpected shape {pixels.shape}")
    return DecodedImage(pixels, mode, mode != "RGB")


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as an H x W x 3 uint8 RGB array (see :func:`decode_image`)."""
    return decode_image(path).pixels
