"""ArcFace 112x112 chips: the similarity fit, the warp's pixel convention, dlib's chip mapping,
per-model alignment and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frad.data.alignment import AlignmentSettings, FaceAligner, align_images, alignment_for
from frad.data.arcface import ARCFACE_TEMPLATE, five_points_from_68, umeyama, warp_similarity


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 200, (5, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = s * pts @ R.T + t
    M = umeyama(pts, dst)
    np.testing.assert_allclose(M[:, :2], s * R, atol=1e-10)
    np.testing.assert_allclose(M[:, 2], t, atol=1e-9)


def test_five_points_from_68() -> None:
    p = np.arange(136, dtype=float).reshape(68, 2)
    five = five_points_from_68(p)
    np.testing.assert_allclose(five[0], p[36:42].mean(0))
    np.testing.assert_allclose(five[1], p[42:48].mean(0))
    np.testing.assert_allclose(five[2:], p[[30, 48, 54]])


def test_points_land_on_the_template_within_a_third_of_a_pixel() -> None:
    """Bright dots drawn at the five image points come out, after the warp, at the template points."""
    rng = np.random.default_rng(3)
    img = np.zeros((250, 250, 3), np.uint8)
    a, s = 0.2, 1.9
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src_pts = (ARCFACE_TEMPLATE - 56) @ R.T * s + np.array([125.3, 118.7])  # an image face at another pose/scale
    yy, xx = np.mgrid[0:250, 0:250]
    for x, y in src_pts:
        img[..., 0] = np.maximum(img[..., 0], (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))).astype(np.uint8))
    M = umeyama(src_pts, ARCFACE_TEMPLATE)
    chip = warp_similarity(img, M, 112).astype(float)[..., 0]
    for tx, ty in ARCFACE_TEMPLATE:
        x0, y0 = int(round(tx)), int(round(ty))
        win = chip[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        wy, wx = np.mgrid[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        cx, cy = (win * wx).sum() / win.sum(), (win * wy).sum() / win.sum()
        assert abs(cx - tx) < 0.3 and abs(cy - ty) < 0.3, (cx, cy, tx, ty)
    del rng


def test_alignment_per_model() -> None:
    assert alignment_for("arcface-5pt-112", (112, 112)) == {"size": 112, "padding": 0.0, "template": "arcface"}
    assert alignment_for("dlib-5pt-150-pad0.25", (150, 150)) == {"size": 150, "padding": 0.25}
    # dlib chips keep their old cache key; ArcFace chips get their own
    assert AlignmentSettings().key() != AlignmentSettings(size=112, padding=0.0, template="arcface").key()
    with pytest.raises(Exception, match="template"):
        AlignmentSettings(template="mtcnn")  # type: ignore[arg-type]


@pytest.mark.lfw
def test_lfw_chips_match_dlib_and_the_cache(lfw_dir: Path, tmp_path: Path) -> None:
    import dlib

    from frad.data.images import decode_image

    files = sorted((lfw_dir / "images").glob("*/*_0001.jpg"))[:4]
    # the dlib-chip transform reproduces dlib.get_face_chip (which truncates: within one grey level)
    al = FaceAligner(AlignmentSettings())
    for f in files:
        img = decode_image(f).pixels
        chip, _, _ = al.align(img)
        M, _ = al.chip_transform(img)
        assert np.abs(warp_similarity(img, M, 150).astype(int) - chip.astype(int)).max() <= 1
    # ArcFace chips: the 68-point landmarks of the chip itself sit near the template
    res = align_images(files, size=112, padding=0.0, template="arcface", cache=tmp_path, workers=1)
    assert res.chips.shape == (4, 112, 112, 3) and res.ok.all()
    sp = FaceAligner(AlignmentSettings(size=112, padding=0.0, template="arcface"))._landmarks68()
    errs = []
    for chip in res.chips:
        shape = sp(chip, dlib.rectangle(0, 0, 111, 111))
        pts = np.array([[p.x, p.y] for p in shape.parts()], float)
        errs.append(np.abs(five_points_from_68(pts) - ARCFACE_TEMPLATE).max())
    assert np.median(errs) < 6.0, errs
    again = align_images(files, size=112, padding=0.0, template="arcface", cache=tmp_path, workers=1)
    assert again.cached == 4
    np.testing.assert_array_equal(again.chips, res.chips)
