"""Identification: templates are centroids; predictions match brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from frad.errors import ConfigError, DataError
from frad.recognition.identification import NotFittedError, TemplateIdentifier


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (6, 8))
    y = np.repeat(np.array([3, 5, 7, 11, 13, 17]), 10)  # labels need not be 0..k-1
    X = centres[np.searchsorted([3, 5, 7, 11, 13, 17], y)] + rng.normal(0, 0.9, (60, 8))
    probes = rng.normal(0, 1.2, (40, 8))
    return X.astype(np.float32), y, probes.astype(np.float32)


def test_templates_are_class_means(data) -> None:
    X, y, _ = data
    ident = TemplateIdentifier().fit(X, y)
    assert ident.classes_.tolist() == [3, 5, 7, 11, 13, 17]
    for c, t in zip(ident.classes_, ident.templates_):
        np.testing.assert_allclose(t, X[y == c].mean(0), rtol=1e-6, atol=1e-6)
    assert ident.counts_.tolist() == [10] * 6


def test_euclidean_template_equals_sklearn_nearest_centroid(data) -> None:
    X, y, probes = data
    ours = TemplateIdentifier(metric="euclidean").fit(X, y).predict(probes)
    ref = NearestCentroid().fit(X, y).predict(probes)
    np.testing.assert_array_equal(ours, ref)


def test_cosine_template_by_hand(data) -> None:
    X, y, probes = data
    ident = TemplateIdentifier(metric="cosine").fit(X, y)
    T = ident.templates_ / np.linalg.norm(ident.templates_, axis=1, keepdims=True)
    P = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    np.testing.assert_allclose(ident.score_samples(probes), P @ T.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ident.predict(probes), ident.classes_[(P @ T.T).argmax(1)])
    # accuracy and top-k agree with their definitions
    truth = ident.classes_[np.arange(40) % 6]
    assert ident.score(probes, truth) == pytest.approx(np.mean(ident.predict(probes) == truth))
    assert ident.topk_accuracy(probes, truth, k=6) == 1.0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_equals_sklearn(data, metric: str, k: int) -> None:
    X, y, probes = data
    ours = TemplateIdentifier(metric=metric, method="knn", n_neighbors=k).fit(X, y).predict(probes)
    ref = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(X, y)
    # scikit-learn breaks vote ties by the lowest label; ours by the closer neighbours: compare only untied probes
    _, nn = ref.kneighbors(probes)
    votes = np.array([np.bincount(np.searchsorted(ref.classes_, y[row]), minlength=6) for row in nn])
    untied = np.sort(votes, 1)[:, -1] > np.sort(votes, 1)[:, -2]
    assert untied.sum() >= 20
    np.testing.assert_array_equal(ours[untied], ref.predict(probes)[untied])


def test_knn_scores_are_nearest_member_similarity(data) -> None:
    X, y, probes = data
    ident = TemplateIdentifier(metric="euclidean", method="knn").fit(X, y)
    d = np.linalg.norm(probes[:, None] - X[None], axis=-1)
    want = np.stack([-d[:, y == c].min(1) for c in ident.classes_], 1)
    np.testing.assert_allclose(ident.score_samples(probes), want, rtol=1e-5, atol=1e-5)


def test_as_module_scores_pixels_like_the_embeddings(dlib_model) -> None:
    rng = np.random.default_rng(1)
    px = torch.from_numpy(rng.uniform(0, 255, (4, 3, 150, 150)).astype(np.float32))
    with torch.no_grad():
        emb = dlib_model(px).numpy()
    ident = TemplateIdentifier().fit(np.concatenate([emb, emb + 0.01]), [0, 1, 2, 3] * 2)
    mod = ident.as_module(dlib_model)
    with torch.no_grad():
        logits = mod(px).numpy()
    np.testing.assert_allclose(logits, ident.score_samples(emb), rtol=1e-5, atol=1e-5)
    assert mod.num_classes == 4 and (logits.argmax(1) == np.arange(4)).all()
    one = px[:1].clone().requires_grad_(True)
    mod(one)[:, 1].sum().backward()
    assert one.grad is not None and one.grad.abs().sum() > 0  # attacks can differentiate through it


def test_errors_are_clear(data) -> None:
    X, y, probes = data
    with pytest.raises(NotFittedError, match="not fitted"):
        TemplateIdentifier().predict(probes)
    with pytest.raises(ConfigError, match="metric"):
        TemplateIdentifier(metric="manhattan").fit(X, y)
    with pytest.raises(ConfigError, match="method"):
        TemplateIdentifier(method="svm").fit(X, y)
    with pytest.raises(ConfigError, match="n_neighbors"):
        TemplateIdentifier(method="knn", n_neighbors=0).fit(X, y)
    with pytest.raises(DataError, match="60 enrolment embeddings but 3 labels"):
        TemplateIdentifier().fit(X, y[:3])
    with pytest.raises(DataError, match="have 4 dimensions, the fitted templates 8"):
        TemplateIdentifier().fit(X, y).predict(probes[:, :4])
