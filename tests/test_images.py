"""Decoding: every common non-RGB mode is converted; broken files are named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frad.data.images import decode_image
from frad.errors import DataError


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_rgb_is_read_unchanged(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p)
    d = decode_image(p)
    assert not d.converted and d.note is None
    np.testing.assert_array_equal(d.pixels, rgb)


def test_grayscale_is_replicated_to_three_channels(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "g.png"
    gray = rgb[..., 0]
    Image.fromarray(gray, "L").save(p)
    d = decode_image(p)
    assert d.converted and d.mode == "L" and "converted from L" in d.note
    np.testing.assert_array_equal(d.pixels, np.repeat(gray[..., None], 3, axis=2))


def test_rgba_drops_alpha_onto_black(tmp_path: Path, rgb: np.ndarray) -> None:
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[0, 0] = 0
    p = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p)
    d = decode_image(p)
    assert d.mode == "RGBA"
    np.testing.assert_array_equal(d.pixels[1:, 1:], rgb[1:, 1:])
    np.testing.assert_array_equal(d.pixels[0, 0], [0, 0, 0])


def test_cmyk_jpeg_is_converted(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "c.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, quality=95)
    d = decode_image(p)
    assert d.mode == "CMYK" and d.pixels.shape == (20, 30, 3)
    assert np.abs(d.pixels.astype(int) - rgb).mean() < 25  # lossy, but the same picture


def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path: Path) -> None:
    arr = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    p = tmp_path / "d.png"
    Image.fromarray(arr).save(p)  # uint16 -> a 16-bit grayscale PNG
    d = decode_image(p)
    assert d.converted and d.pixels.dtype == np.uint8
    np.testing.assert_array_equal(d.pixels[..., 0], np.round(arr / 257.0).astype(np.uint8))


def test_palette_image_is_converted(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "p.gif"
    Image.fromarray(rgb).convert("P").save(p)
    assert decode_image(p).pixels.shape == (20, 30, 3)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\xff\xd8\xff\xe0" + bytes(50)], ids=["empty", "text", "bad-jpeg"])
def test_broken_file_error_names_the_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "broken.jpg"
    p.write_bytes(content)
    with pytest.raises(DataError, match="broken.jpg"):
        decode_image(p)


def test_truncated_jpeg_is_reported(tmp_path: Path, rgb: np.ndarray) -> None:
    p = tmp_path / "t.jpg"
    Image.fromarray(np.tile(rgb, (10, 10, 1))).save(p, quality=90)
    p.write_bytes(p.read_bytes()[: 300])
    with pytest.raises(DataError, match="t.jpg"):
        decode_image(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        decode_image(tmp_path / "none.png")
