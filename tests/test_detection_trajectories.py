"""Trajectories against a plain NumPy reference (float64, explicit differences)."""

from __future__ import annotations

import numpy as np
import pytest

from frad.detection import ClassRepresentatives, compute_trajectories
from frad.errors import ConfigError, DataError


def _numpy_reference(features, reps, layers, metric):
    out = np.empty((features[layers[0]].shape[0], len(layers), reps[layers[0]].shape[0]))
    for li, t in enumerate(layers):
        x = features[t].astype(np.float64)[:, None, :]
        r = reps[t].astype(np.float64)[None, :, :]
        if metric == "euclidean":
            out[:, li] = np.sqrt(((x - r) ** 2).sum(-1))
        else:
            out[:, li] = (x * r).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(r, axis=-1))
    return out


@pytest.fixture()
def setup():
    rng = np.random.default_rng(0)
    channels = (4, 9, 16)
    feats = {f"block{i + 1}": np.maximum(rng.normal(1, 1.5, (70, c)), 0).astype(np.float32) + 0.01
             for i, c in enumerate(channels)}
    ref = {t: np.maximum(rng.normal(1, 1.5, (50, x.shape[1])), 0).astype(np.float32) + 0.01 for t, x in feats.items()}
    labels = np.arange(50) % 5
    return feats, ref, labels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("kind", ["medoid", "centroid"])
def test_matches_numpy_reference(setup, metric, kind):
    feats, ref, labels = setup
    reps = ClassRepresentatives(kind).fit(ref, labels)
    got = compute_trajectories(feats, reps, metric, batch_size=16)  # several batches
    want = _numpy_reference(feats, reps.representatives_, reps.layers_, metric)
    assert got.shape == (70, 3, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cosine_is_raw_similarity_not_distance():
    feats = {"t": np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)}
    reps = {"t": np.array([[2.0, 0.0], [0.0, 3.0]], dtype=np.float32)}
    got = compute_trajectories(feats, reps, "cosine")[:, 0, :]
    np.testing.assert_allclose(got, [[1.0, 0.0], [2**-0.5, 2**-0.5]], atol=1e-6)
    l2 = compute_trajectories(feats, reps, "euclidean")[:, 0, :]
    np.testing.assert_allclose(l2, [[1.0, np.sqrt(10.0)], [np.sqrt(2.0), np.sqrt(5.0)]], atol=1e-6)


def test_layer_order_follows_representatives_and_extra_taps_are_ignored(setup):
    feats, ref, labels = setup
    reps = ClassRepresentatives("centroid", layers=["block3", "block1"]).fit(ref, labels)
    got = compute_trajectories(feats, reps)  # feats also has block2
    want = _numpy_reference(feats, reps.representatives_, ["block3", "block1"], "euclidean")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_results(setup):
    feats, ref, labels = setup
    reps = ClassRepresentatives("medoid").fit(ref, labels)
    a = compute_trajectories(feats, reps, "euclidean", batch_size=1)
    b = compute_trajectories(feats, reps, "euclidean", batch_size=1000)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_errors(setup):
    feats, ref, labels = setup
    reps = ClassRepresentatives("centroid").fit(ref, labels)
    with pytest.raises(ConfigError, match="metric"):
        compute_trajectories(feats, reps, "manhattan")
    with pytest.raises(DataError, match="block2"):
        compute_trajectories({k: v for k, v in feats.items() if k != "block2"}, reps)
    wrong = dict(feats)
    wrong["block1"] = np.ones((70, 5), dtype=np.float32)
    with pytest.raises(DataError, match="channels"):
        compute_trajectories(wrong, reps)
    from frad.detection import NotFittedError

    with pytest.raises(NotFittedError):
        compute_trajectories(feats, ClassRepresentatives())
