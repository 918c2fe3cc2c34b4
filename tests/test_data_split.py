"""The paper's protocol split: deterministic, disjoint, counts as set, dropped identities reported."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from frad.cli import main
from frad.data.folders import FaceDataset
from frad.data.split import SplitSettings, make_split, read_split
from frad.errors import ConfigError, DataError


def _dataset(counts: dict[str, int]) -> FaceDataset:
    names = sorted(counts)
    labels = np.concatenate([np.full(counts[n], i) for i, n in enumerate(names)])
    px = np.zeros((labels.size, 4, 4, 3), np.uint8)
    px.reshape(labels.size, -1)[:, :2] = np.stack([np.arange(labels.size) % 256, np.arange(labels.size) // 256], 1)
    ids = [f"{names[c]}/{i:04d}.png" for i, c in enumerate(labels)]
    return FaceDataset.from_arrays(px, labels, names, name="toy", image_ids=ids)


@pytest.fixture()
def toy() -> FaceDataset:
    return _dataset({"ann": 30, "ben": 12, "cid": 9, "dan": 7, "eve": 20})


def test_counts_roles_and_dropped_identities(toy: FaceDataset) -> None:
    s = make_split(toy, n_natural=3, n_source=2, head_fractions=(0.6, 0.2, 0.2), seed=1)
    # min images = 3 + 2 + 3 = 8: dan (7) is dropped and reported
    assert s.classes == ["ann", "ben", "cid", "eve"] and s.dropped == {"dan": 7}
    per = Counter((r.identity, r.role) for r in s.rows)
    for name, n in {"ann": 30, "ben": 12, "cid": 9, "eve": 20}.items():
        assert per[(name, "natural")] == 3 and per[(name, "source")] == 2
        rest = n - 5
        val, test = max(1, round(0.2 * rest)), max(1, round(0.2 * rest))
        assert (per[(name, "train")], per[(name, "val")], per[(name, "test")]) == (rest - val - test, val, test)
    # every image at most once; labels index the kept classes; indices point back at the dataset
    assert len({r.image_id for r in s.rows}) == len(s.rows) == 30 + 12 + 9 + 20
    for r in s.rows:
        assert s.classes[r.label] == r.identity == toy[r.index].identity
        assert r.image_id == toy[r.index].image_id and r.sha256 == toy[r.index].sha256
    assert set(s.indices("natural")).isdisjoint(s.indices("train", "val", "test", "source"))
    assert s.labels("natural").tolist() == [s.classes.index(toy[i].identity) for i in s.indices("natural")]
    assert s.counts() == {"natural": 12, "source": 8, "train": 31, "val": 10, "test": 10}  # by hand: rest 25, 7, 4, 15


def test_same_seed_same_manifest_other_seed_other_manifest(toy: FaceDataset, tmp_path: Path) -> None:
    a = make_split(toy, n_natural=3, n_source=2, seed=7).write(tmp_path / "a")
    b = make_split(toy, n_natural=3, n_source=2, seed=7).write(tmp_path / "b")
    c = make_split(toy, n_natural=3, n_source=2, seed=8).write(tmp_path / "c")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # an identity's split does not depend on which other identities are present
    alone = make_split(_dataset({"ann": 30, "eve": 20}), n_natural=3, n_source=2, seed=7)
    full = make_split(toy, n_natural=3, n_source=2, seed=7)
    pick = lambda s: {(r.image_id, r.role) for r in s.rows if r.identity == "ann"}  # noqa: E731
    assert pick(alone) == pick(full)


def test_manifest_round_trip_and_tampering(toy: FaceDataset, tmp_path: Path) -> None:
    s = make_split(toy, n_natural=2, n_source=2, seed=3)
    path = s.write(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "split.json").read_text())
    assert (
        meta["settings"]["seed"] == 3 and meta["dataset"]["dataset"] == "toy" and meta["dataset"]["synthetic"] is False
    )
    assert meta["counts"] == s.counts()
    back = read_split(tmp_path / "run")
    assert back.rows == s.rows and back.classes == s.classes and back.settings == s.settings
    assert not list((tmp_path / "run").glob(".*tmp"))  # no temporary files left behind
    path.write_text(path.read_text().replace("natural", "train", 1))
    with pytest.raises(DataError, match="split.csv.*checksum"):
        read_split(tmp_path / "run")
    with pytest.raises(DataError, match="not found"):
        read_split(tmp_path / "nothing")


def test_bad_settings_name_the_field(toy: FaceDataset) -> None:
    with pytest.raises(ConfigError, match="split.n_natural"):
        SplitSettings(n_natural=-1)
    with pytest.raises(ConfigError, match="split.head_fractions"):
        SplitSettings(head_fractions=(0.0, 0.5, 0.5))
    with pytest.raises(ConfigError, match="split.min_head_images"):
        SplitSettings(min_head_images=1)
    with pytest.raises(ConfigError, match="unknown split role"):
        make_split(toy, n_natural=1, n_source=1).indices("training")
    with pytest.raises(DataError, match="needs"):
        make_split(toy, n_natural=20, n_source=20)


def test_synthetic_flag_reaches_the_manifest(tmp_path: Path) -> None:
    from frad.data.synthetic import make_synthetic_faces

    ds = FaceDataset.from_synthetic(make_synthetic_faces(3, 8, size=48, seed=0))
    s = make_split(ds, n_natural=2, n_source=2, seed=0)
    assert s.synthetic and "synthetic" in repr(s)
    s.write(tmp_path)
    assert json.loads((tmp_path / "split.json").read_text())["dataset"]["synthetic"] is True
    assert read_split(tmp_path).synthetic


def test_lfw_protocol_split(lfw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's split: all 158 identities with >= 10 images keep, 2 natural + 2 source each."""
    assert (
        main(["data", "split", str(lfw_dir), "--out", str(tmp_path), "--n-natural", "2", "--n-source", "2", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["identities"] == 158 and out["dropped_identities"] == {}
    assert out["counts"]["natural"] == 316 and out["counts"]["source"] == 316
    assert sum(out["counts"].values()) == 4324
    assert out["dataset"]["variant"] == "lfw-deepfunneled"
    s = read_split(tmp_path)
    assert all((lfw_dir / "images" / r.path).is_file() for r in s.rows[:50])


def test_split_cli_on_an_identity_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from frad.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "syn", 3, [6, 6, 3], size=48, seed=0)
    args = ["data", "split", str(root), "--out", str(tmp_path / "run"), "--n-natural", "1", "--n-source", "1"]
    assert main([*args, "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["identities"] == 2 and out["dropped_identities"] == {"synthetic_0002": 3}
    assert out["dataset"]["synthetic"] is True and out["settings"]["seed"] == 4
    first = (tmp_path / "run" / "split.csv").read_bytes()
    assert main([*args, "--seed", "4"]) == 0
    assert "[SYNTHETIC]" in capsys.readouterr().out
    assert (tmp_path / "run" / "split.csv").read_bytes() == first
    assert main([*args, "--head-fractions", "0", "1", "1"]) == 2
    assert "split.head_fractions" in capsys.readouterr().err
