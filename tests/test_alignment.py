"""Alignment to dlib chips on real LFW faces: dlib's own geometry, cache, no-face handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import frad.data.alignment as alignment
from frad.data.alignment import FaceAligner, align_images
from frad.data.images import load_rgb
from frad.models.base import embed_images


@pytest.fixture(scope="module")
def faces(lfw_dir: Path) -> list[Path]:
    return sorted((lfw_dir / "images").glob("*/*.jpg"))[::150][:8]


def test_chips_equal_dlibs_own_pipeline(faces: list[Path], tmp_path: Path) -> None:
    import dlib

    from frad.models import find_models_file

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(find_models_file("shape_predictor_5_face_landmarks.dat")))
    res = align_images(faces, cache=tmp_path)
    assert res.ok.all() and res.chips.shape == (len(faces), 150, 150, 3)
    for p, chip in zip(faces, res.chips):
        img = load_rgb(p)
        rects = det(img, 0) or det(img, 1)
        r = min(rects, key=lambda r: (r.center().x - 125) ** 2 + (r.center().y - 125) ** 2)
        ref = dlib.get_face_chip(img, sp(img, r), size=150, padding=0.25)
        np.testing.assert_array_equal(chip, ref)


def test_second_run_reads_the_cache(faces: list[Path], tmp_path: Path, monkeypatch) -> None:
    first = align_images(faces, cache=tmp_path)

    def boom(self, img):  # noqa: ANN001
        raise AssertionError("aligned again instead of reading the cache")

    monkeypatch.setattr(FaceAligner, "align", boom)
    second = align_images(faces, cache=tmp_path)
    assert second.cached == len(faces)
    np.testing.assert_array_equal(first.chips, second.chips)
    assert first.methods == second.methods


def test_changed_settings_do_not_reuse_chips(faces: list[Path], tmp_path: Path) -> None:
    a = align_images(faces[:2], cache=tmp_path)
    b = align_images(faces[:2], cache=tmp_path, size=112)
    assert b.cached == 0 and b.chips.shape[1:] == (112, 112, 3) and a.chips.shape[1] == 150


def test_no_face_is_reported_and_counted_not_fatal(faces: list[Path], tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((250, 250, 3), 128, np.uint8)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    res = align_images([faces[0], blank, broken], cache=tmp_path / "c", detector="hog", fallback="none")
    assert res.methods == ["hog", "none", "error"]
    assert res.ok.tolist() == [True, False, False]
    assert res.counts() == {"hog": 1, "none": 1, "error": 1}
    assert "broken.jpg" in res.errors[2]
    assert not res.chips[1].any() and res.chips[0].any()
    # with the centred fallback the blank image still yields a chip, marked as such
    res2 = align_images([blank], cache=tmp_path / "c2", detector="hog", fallback="centre")
    assert res2.methods == ["fallback"] and res2.ok.all()


def test_face_nearest_the_centre_is_chosen(faces: list[Path], dlib_model, tmp_path: Path) -> None:
    a, b = load_rgb(faces[0]), load_rgb(faces[3])
    canvas = np.zeros((250, 750, 3), np.uint8)
    canvas[:, :250] = a  # off-centre face
    canvas[:, 250:500] = b  # centred face
    p = tmp_path / "two.png"
    Image.fromarray(canvas).save(p)
    res = align_images([p, faces[0], faces[3]], cache=tmp_path)
    assert res.n_faces[0] >= 2
    e = embed_images(dlib_model, res.chips)
    assert np.linalg.norm(e[0] - e[2]) < 0.2 < np.linalg.norm(e[0] - e[1])


def test_grayscale_and_cmyk_faces_align(faces: list[Path], tmp_path: Path) -> None:
    img = Image.open(faces[0])
    g, c = tmp_path / "g.png", tmp_path / "c.jpg"
    img.convert("L").save(g)
    img.convert("CMYK").save(c, quality=95)
    res = align_images([g, c], cache=tmp_path)
    assert res.ok.all()
    assert "converted from L" in res.notes[0] and "CMYK" in res.notes[1]


def test_worker_processes_give_the_same_chips(faces: list[Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(alignment, "_PARALLEL_MIN", 2)
    par = align_images(faces[:4], cache=False, workers=2)
    seq = align_images(faces[:4], cache=False, workers=1)
    np.testing.assert_array_equal(par.chips, seq.chips)
