"""Uploaded images: checked for size, format and pixel count before they are decoded, then
turned into the face model's input (an aligned face chip, or the image as-is when the client
says it already is one).

Every problem raises :class:`UploadError` with an HTTP status and a message for the client.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["UploadError", "DecodedUpload", "decode_upload", "FaceCropper", "ALLOWED_FORMATS"]

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class UploadError(Exception):
    """A request the service refuses: ``status`` (4xx) and a message naming what was wrong."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class DecodedUpload:
    pixels: np.ndarray  # H x W x 3 uint8 RGB
    sha256: str
    format: str


def decode_upload(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> DecodedUpload:
    """Check and decode one uploaded image (JPEG, PNG or WebP)."""
    if not data:
        raise UploadError(400, f"{field}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{field}: {len(data)} bytes, more than the limit of {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            w, h = img.size  # read from the header only: nothing is decoded yet
            if w * h > max_pixels:
                raise UploadError(413, f"{field}: {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} pixels")
            fmt = str(img.format)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            from ..data.images import _to_rgb

            pixels = np.array(_to_rgb(img), dtype=np.uint8)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(415, f"{field}: not a JPEG, PNG or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{field}: too many pixels (decompression bomb guard)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(400, f"{field}: corrupt or truncated image ({exc})") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
        raise UploadError(400, f"{field}: decoded to an unexpected shape {pixels.shape}")
    return DecodedUpload(pixels, hashlib.sha256(data).hexdigest(), fmt)


class FaceCropper:
    """Image -> model input.  With alignment: dlib's HOG detector, 5 landmarks and the face chip
    (the face nearest the centre); no face -> 422.  ``aligned=True`` takes the image as the
    chip itself (it must have the model's input size), as for adversarials made on chips."""

    def __init__(self, alignment: dict[str, Any] | None, input_size: tuple[int, int], *, detector: str = "hog") -> None:
        self.alignment = alignment
        self.input_size = tuple(input_size)
        self.detector = detector
        self._local = threading.local()

    def _aligner(self) -> Any:
        a = getattr(self._local, "aligner", None)
        if a is None:
            from ..data.alignment import AlignmentSettings, FaceAligner

            assert self.alignment is not None
            a = FaceAligner(AlignmentSettings(size=int(self.alignment["size"]), padding=float(self.alignment["padding"]),
                                              detector=self.detector, fallback="none"))  # type: ignore[arg-type]
            self._local.aligner = a
        return a

    def __call__(self, pixels: np.ndarray, *, field: str, aligned: bool = False) -> tuple[np.ndarray, str]:
        """``(chip H x W x 3 uint8, how)``; ``how`` is 'aligned-by-client', 'hog', 'hog-up1' or 'resize'."""
        h, w = self.input_size
        if aligned:
            if pixels.shape[:2] != (h, w):
                raise UploadError(422, f"{field}: aligned=true needs a {w}x{h} face chip, got {pixels.shape[1]}x{pixels.shape[0]}")
            return pixels, "aligned-by-client"
        if self.alignment is None:
            im = Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), "resize"
        chip, method, _ = self._aligner().align(pixels)
        if chip is None:
            raise UploadError(422, f"{field}: no face found in the image")
        return chip, method
