"""Class representatives: centroids and medoids against a brute-force NumPy reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frad.detection import ClassRepresentatives, NotFittedError
from frad.errors import ConfigError, DataError, FradError


def _features(rng: np.random.Generator, n: int = 60, channels=(5, 7, 3)) -> dict[str, np.ndarray]:
    return {f"block{i + 1}": np.maximum(rng.normal(1, 1, (n, c)), 0).astype(np.float32) for i, c in enumerate(channels)}


def _brute_medoid(x: np.ndarray) -> int:
    x = x.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return int(np.argmin(d.sum(1)))


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    feats = _features(rng)
    labels = rng.choice([3, 7, 11, 20], size=60)
    labels[:4] = [3, 7, 11, 20]  # every class present
    return feats, labels


def test_centroids_are_class_means(data):
    feats, labels = data
    reps = ClassRepresentatives("centroid").fit(feats, labels)
    assert reps.layers_ == list(feats)
    np.testing.assert_array_equal(reps.classes_, [3, 7, 11, 20])
    for t, x in feats.items():
        want = np.stack([x[labels == c].astype(np.float64).mean(0) for c in reps.classes_])
        np.testing.assert_allclose(reps.representatives_[t], want, rtol=1e-6)
    np.testing.assert_array_equal(reps.counts_, [np.sum(labels == c) for c in reps.classes_])


def test_medoids_are_members_with_minimal_distance_sum(data):
    feats, labels = data
    reps = ClassRepresentatives("medoid").fit(feats, labels)
    for t, x in feats.items():
        for k, c in enumerate(reps.classes_):
            idx = reps.medoid_indices_[t][k]
            assert labels[idx] == c  # a member of its class
            np.testing.assert_array_equal(reps.representatives_[t][k], x[idx])
            members = np.flatnonzero(labels == c)
            assert idx == members[_brute_medoid(x[members])]


def test_medoid_differs_from_centroid_on_a_skewed_class():
    # 1-D class {0, 1, 2, 3, 10}: distance sums 16, 13, 12, 13, 34 -> medoid 2; the mean 3.2 is no member
    x = {"t": np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=np.float32)}
    y = np.zeros(5, dtype=int)
    med = ClassRepresentatives("medoid").fit(x, y)
    cen = ClassRepresentatives("centroid").fit(x, y)
    assert med.representatives_["t"][0, 0] == 2.0 and med.medoid_indices_["t"][0] == 2
    assert cen.representatives_["t"][0, 0] == pytest.approx(3.2)


def test_medoid_uses_euclidean_even_for_directional_data():
    # two collinear points with a third: cosine would call [1,0] and [10,0] identical, Euclidean does not
    x = {"t": np.array([[1.0, 0.0], [10.0, 0.0], [2.0, 0.5]], dtype=np.float32)}
    reps = ClassRepresentatives("medoid").fit(x, np.zeros(3, dtype=int))
    assert reps.medoid_indices_["t"][0] == _brute_medoid(x["t"]) == 2


def test_predictions_keep_only_correct_rows(data):
    feats, labels = data
    preds = labels.copy()
    wrong = np.arange(10, 30)
    preds[wrong] = -1
    reps = ClassRepresentatives("medoid").fit(feats, labels, predictions=preds)
    assert reps.n_samples_fit_ == labels.size - wrong.size
    for idx in reps.medoid_indices_["block1"]:
        assert idx not in wrong
    ok = preds == labels
    ref = ClassRepresentatives("centroid").fit({t: x[ok] for t, x in feats.items()}, labels[ok])
    cen = ClassRepresentatives("centroid").fit(feats, labels, predictions=preds)
    np.testing.assert_allclose(cen.representatives_["block2"], ref.representatives_["block2"])


def test_embedding_is_left_out_unless_named(data):
    feats, labels = data
    with_emb = {**feats, "embedding": np.ones((labels.size, 4), dtype=np.float32)}
    assert ClassRepresentatives().fit(with_emb, labels).layers_ == list(feats)
    named = ClassRepresentatives(layers=["block1", "embedding"]).fit(with_emb, labels)
    assert named.layers_ == ["block1", "embedding"]


def test_layers_select_and_order(data):
    feats, labels = data
    reps = ClassRepresentatives("centroid", layers=["block3", "block1"]).fit(feats, labels)
    assert reps.layers_ == ["block3", "block1"]
    assert reps.channels() == {"block3": 3, "block1": 5}


def test_save_load_round_trip(tmp_path, data):
    feats, labels = data
    reps = ClassRepresentatives("medoid").fit(feats, labels)
    npz, js = reps.save(tmp_path / "reps" / "medoid")
    assert npz.suffix == ".npz" and js.suffix == ".json"
    meta = json.loads(js.read_text())
    assert meta["kind"] == "medoid" and meta["layers"] == list(feats)
    back = ClassRepresentatives.load(tmp_path / "reps" / "medoid")
    assert back.kind == "medoid" and back.layers_ == reps.layers_
    np.testing.assert_array_equal(back.classes_, reps.classes_)
    for t in feats:
        np.testing.assert_array_equal(back.representatives_[t], reps.representatives_[t])
        np.testing.assert_array_equal(back.medoid_indices_[t], reps.medoid_indices_[t])
    # a changed npz is refused by name
    raw = bytearray(npz.read_bytes())
    raw[-1] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum"):
        ClassRepresentatives.load(tmp_path / "reps" / "medoid")


def test_errors():
    with pytest.raises(NotFittedError):
        ClassRepresentatives().channels()
    assert issubclass(NotFittedError, FradError)
    rng = np.random.default_rng(1)
    feats = _features(rng, n=10)
    with pytest.raises(ConfigError, match="kind"):
        ClassRepresentatives("mean").fit(feats, np.zeros(10))
    with pytest.raises(DataError, match="labels"):
        ClassRepresentatives().fit(feats, np.zeros(9))
    with pytest.raises(DataError, match="block9"):
        ClassRepresentatives(layers=["block9"]).fit(feats, np.zeros(10))
    bad = dict(feats)
    bad["block2"] = bad["block2"][:5]
    with pytest.raises(DataError, match="block2"):
        ClassRepresentatives().fit(bad, np.zeros(10))
    with pytest.raises(DataError, match="correctly classified"):
        ClassRepresentatives().fit(feats, np.zeros(10), predictions=np.ones(10))
