"""Identity-folder datasets: stable classes, conversions noted, every bad file reported by name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frad.cli import main
from frad.data.folders import FaceDataset, load_identity_folders, scan_identity_folders
from frad.errors import DataError


def _img(path: Path, seed: int, mode: str = "RGB", fmt: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode == "L":
        im = im.convert("L")
    elif mode == "CMYK":
        im = im.convert("CMYK")
    elif mode == "I;16":
        im = Image.fromarray((arr[..., 0].astype(np.uint16) * 257).astype(np.uint16))
    im.save(path, format=fmt)


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    """A dataset with one of every problem the scanner must report."""
    root = tmp_path / "faces"
    _img(root / "bob" / "bob_1.png", 1)
    _img(root / "bob" / "bob_2.jpg", 2)
    _img(root / "bob" / "bob_gray.png", 3, "L")
    _img(root / "alice" / "a1.png", 4)
    _img(root / "alice" / "a_cmyk.jpg", 5, "CMYK")
    _img(root / "alice" / "a16.png", 6, "I;16")
    (root / "alice" / "notes.txt").write_text("hello")
    (root / "alice" / ".DS_Store").write_bytes(b"\0\1\2")
    good = (root / "bob" / "bob_2.jpg").read_bytes()
    (root / "bob" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bob" / "fake.png").write_bytes(b"this is not a png")
    (root / "carol").mkdir()  # empty identity
    (root / "dave").mkdir()
    (root / "dave" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")  # identity with only a corrupt file
    _img(root / "erin" / "sub" / "deep.png", 7)  # nested folder
    _img(root / "erin" / "e1.png", 8)
    shutil.copyfile(root / "bob" / "bob_1.png", root / "erin" / "copy_of_bob.png")  # duplicate across identities
    _img(root / "stray.png", 9)  # image outside any identity
    (root / "README.md").write_text("a dataset")  # not a problem
    return root


def test_every_problem_is_reported_by_name(messy: Path) -> None:
    ds = load_identity_folders(messy, cache=False)
    assert ds.classes == ["alice", "bob", "erin"]
    got = {(Path(p.path).relative_to(messy).as_posix(), p.kind) for p in ds.problems}
    assert got == {
        ("erin/copy_of_bob.png", "duplicate"),
        ("alice/notes.txt", "not-image"),
        ("alice/.DS_Store", "not-image"),
        ("bob/truncated.jpg", "corrupt"),
        ("bob/fake.png", "corrupt"),
        ("dave/broken.jpg", "corrupt"),
        ("carol", "empty-identity"),
        ("dave", "empty-identity"),
        ("erin/sub", "nested-folder"),
        ("stray.png", "outside-identity"),
    }
    dup = next(p for p in ds.problems if p.kind == "duplicate")
    assert "bob/bob_1.png" in dup.reason
    # kept images, stable labels = index of the sorted identity name
    assert ds.image_ids == [
        "alice/a1.png",
        "alice/a16.png",
        "alice/a_cmyk.jpg",
        "bob/bob_1.png",
        "bob/bob_2.jpg",
        "bob/bob_gray.png",
        "erin/e1.png",
    ]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert ds.counts() == {"alice": 3, "bob": 3, "erin": 1}
    notes = {im.image_id: im.note for im in ds if im.note}
    assert set(notes) == {"alice/a16.png", "alice/a_cmyk.jpg", "bob/bob_gray.png"}
    assert all("converted" in n for n in notes.values())
    assert ds.load(0).shape == (24, 20, 3) and ds.load(0).dtype == np.uint8
    assert not ds.synthetic and ds.name == "faces"


def test_summary_cli_json_counts_everything(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", str(messy), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["identities"] == 3 and s["images"] == 7
    assert s["per_class"] == {"alice": 3, "bob": 3, "erin": 1}
    assert s["problems"] == {
        "corrupt": 3,
        "not-image": 2,
        "duplicate": 1,
        "empty-identity": 2,
        "nested-folder": 1,
        "outside-identity": 1,
    }
    assert len(s["problem_files"]) == 10
    assert all(set(p) == {"path", "kind", "reason"} and p["reason"] for p in s["problem_files"])
    assert s["converted"] == 3 and s["synthetic"] is False
    # text output names every problem file, and min-images leaves identities out
    assert main(["data", "summary", str(messy), "--min-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "truncated.jpg" in out and "stray.png" in out and "2 identities" in out


def test_min_images_reindexes_classes(messy: Path) -> None:
    ds = load_identity_folders(messy, cache=False, min_images=2)
    assert ds.classes == ["alice", "bob"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.dropped == {"carol": 0, "dave": 0, "erin": 1}


def test_scan_cache_reuses_unchanged_files_and_rereads_changed_ones(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(3):
        _img(root / "p" / f"{i}.png", i)
    first = scan_identity_folders(root)
    assert first.cached == 0 and len(first.images) == 3
    second = scan_identity_folders(root)
    assert second.cached == 3
    # damage one file (size changes): it is re-read and now reported
    (root / "p" / "1.png").write_bytes(b"broken")
    third = scan_identity_folders(root)
    assert third.cached == 2
    assert [Path(p.path).name for p in third.problems if p.kind == "corrupt"] == ["1.png"]


def test_content_key_follows_content(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _img(root / "a" / "1.png", 1)
    _img(root / "b" / "1.png", 2)
    k1 = load_identity_folders(root, cache=False).content_key()
    assert load_identity_folders(root, cache=False).content_key() == k1
    _img(root / "b" / "1.png", 3)
    assert load_identity_folders(root, cache=False).content_key() != k1


def test_missing_or_empty_root_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="not found"):
        load_identity_folders(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    _img(tmp_path / "flat" / "x.png", 0)
    with pytest.raises(DataError, match="no identity folders"):
        load_identity_folders(tmp_path / "flat")
    assert main(["data", "summary", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frad: error:") and "nope" in err and err.count("\n") == 1


def test_in_memory_dataset_checks_its_arrays() -> None:
    px = np.zeros((3, 8, 8, 3), np.uint8)
    px[1] += 1
    ds = FaceDataset.from_arrays(px, [0, 1, 1], ["a", "b"], name="mem")
    assert ds.counts() == {"a": 1, "b": 2} and ds.load(1)[0, 0, 0] == 1
    assert ds.subset([2, 0]).labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="labels must index"):
        FaceDataset.from_arrays(px, [0, 1, 2], ["a", "b"], name="mem")


def test_lfw_people_names_the_variant(lfw_dir: Path) -> None:
    from frad.data.lfw import lfw_people

    ds = lfw_people(lfw_dir, min_images=10)
    assert ds.name == "lfw" and ds.variant == "lfw-deepfunneled" and not ds.synthetic
    assert len(ds.classes) == 158 and len(ds) == 4324 and not ds.problems
    assert ds.counts()["George_W_Bush"] == 530
    assert ds.classes == sorted(ds.classes)
    assert ds.image_ids[0] == "Abdullah_Gul/Abdullah_Gul_0001.jpg"
    big = lfw_people(lfw_dir, min_images=100)
    assert sorted(big.classes) == big.classes and len(big.classes) == 5
    assert os.fspath(big.root).endswith("images")
