"""frad's synthetic faces: deterministic, labelled synthetic everywhere, and learnable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from frad.cli import main
from frad.data.folders import FaceDataset, load_identity_folders
from frad.data.synthetic import SYNTHETIC_ALIGNMENT, make_synthetic_faces, write_synthetic_dataset
from frad.errors import ConfigError


def test_deterministic_in_the_seed_and_identities_are_independent() -> None:
    a = make_synthetic_faces(3, 2, seed=5)
    b = make_synthetic_faces(3, 2, seed=5)
    c = make_synthetic_faces(3, 2, seed=6)
    np.testing.assert_array_equal(a.chips, b.chips)
    assert not np.array_equal(a.chips, c.chips)
    # identity 1 looks the same whether 3 or 4 identities are drawn
    d = make_synthetic_faces(4, 2, seed=5)
    np.testing.assert_array_equal(a.chips[2:4], d.chips[2:4])
    assert a.chips.shape == (6, 150, 150, 3) and a.chips.dtype == np.uint8
    assert a.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert a.image_ids[3] == "synthetic_0001/synthetic_0001_0002"
    assert a.synthetic and a.name == "synthetic" and a.alignment == SYNTHETIC_ALIGNMENT


def test_images_of_one_identity_vary_but_stay_closer_than_other_identities() -> None:
    f = make_synthetic_faces(6, 4, seed=0)
    x = f.chips.reshape(len(f), -1).astype(np.float64)
    assert not np.array_equal(f.chips[0], f.chips[1])  # pose, light, noise differ
    # the drawn face (centre of the chip) differs more between identities than within one
    centre = f.chips[:, 45:120, 40:110].reshape(len(f), -1).astype(np.float64)
    d = np.linalg.norm(centre[:, None] - centre[None], axis=-1)
    same = f.labels[:, None] == f.labels[None]
    off = ~np.eye(len(f), dtype=bool)
    assert d[same & off].mean() < d[~same].mean()
    assert x.std() > 10


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="n_identities"):
        make_synthetic_faces(1, 3)
    with pytest.raises(ConfigError, match="images_per_identity"):
        make_synthetic_faces(2, 0)
    with pytest.raises(ConfigError, match="lists 1 counts"):
        make_synthetic_faces(2, [3])


def test_written_dataset_stays_labelled_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_synthetic_dataset(tmp_path / "syn", 3, [2, 3, 2], seed=1)
    ds = load_identity_folders(root, cache=False)
    assert ds.synthetic and ds.name == "synthetic" and ds.alignment == SYNTHETIC_ALIGNMENT
    assert ds.counts() == {"synthetic_0000": 2, "synthetic_0001": 3, "synthetic_0002": 2}
    assert not ds.problems  # the marker file is not a problem
    mem = make_synthetic_faces(3, [2, 3, 2], seed=1)
    np.testing.assert_array_equal(ds.load(2), mem.chips[2])  # PNG is lossless
    assert ds.describe()["synthetic"] is True
    # writing again leaves the files alone (resumable) and the CLI labels it too
    before = (root / "synthetic_0000" / "synthetic_0000_0001.png").stat().st_mtime_ns
    write_synthetic_dataset(root, 3, [2, 3, 2], seed=1)
    assert (root / "synthetic_0000" / "synthetic_0000_0001.png").stat().st_mtime_ns == before
    assert main(["data", "summary", str(root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["synthetic"] is True and s["dataset"] == "synthetic" and s["images"] == 7
    assert main(["data", "summary", str(root)]) == 0
    assert "[SYNTHETIC]" in capsys.readouterr().out


def test_synthetic_cli_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synthetic", str(tmp_path / "s"), "--identities", "2", "--images", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["synthetic"] is True
    assert len(list((tmp_path / "s").glob("*/*.png"))) == 4


def test_learnable_from_dlib_embeddings(dlib_model) -> None:
    """A head on dlib's embeddings tells 6 drawn identities apart far above chance (1/6)."""
    from frad.data.features import extract_features
    from frad.recognition.head_training import HeadTrainer

    faces = make_synthetic_faces(6, 8, seed=3)
    ds = FaceDataset.from_synthetic(faces)
    feats = extract_features(dlib_model, ds, taps=["embedding"], cache=False)
    y = ds.labels
    train = np.array([i % 8 < 5 for i in range(len(y))])
    head = HeadTrainer(lr=0.05, max_epochs=400, random_state=0).fit(feats.embedding[train], y[train])
    acc = head.score(feats.embedding[~train], y[~train])
    assert acc >= 0.8, acc
