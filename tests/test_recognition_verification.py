"""Verification: every genuine pair, sampled impostors, the EER / FAR threshold checked by hand."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from frad.errors import ConfigError, DataError
from frad.recognition.verification import NotFittedError, Verifier, sample_pairs


def test_all_genuine_pairs_and_distinct_impostors() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    i, j, same = sample_pairs(y, impostor_ratio=2.0, random_state=0)
    genuine = {(a, b) for a, b in combinations(range(y.size), 2) if y[a] == y[b]}
    assert {(a, b) for a, b, s in zip(i, j, same) if s} == genuine  # 3 + 1 + 6 = 10 pairs
    imp = [(a, b) for a, b, s in zip(i, j, same) if not s]
    assert len(imp) == 20 and len(set(imp)) == 20
    assert all(a < b and y[a] != y[b] for a, b in imp)
    # deterministic in random_state
    i2, j2, _ = sample_pairs(y, impostor_ratio=2.0, random_state=0)
    i3, j3, _ = sample_pairs(y, impostor_ratio=2.0, random_state=1)
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    assert not (np.array_equal(i, i3) and np.array_equal(j, j3))


def test_impostors_capped_at_what_exists_and_sparse_sampling_is_uniform() -> None:
    y = np.array([0, 0, 1, 1])
    _, _, same = sample_pairs(y, impostor_ratio=100)
    assert same.sum() == 2 and (~same).sum() == 4  # only 4 impostor pairs exist
    y = np.repeat(np.arange(200), 3)  # sparse branch: many more impostor pairs than requested
    i, j, same = sample_pairs(y, impostor_ratio=5, random_state=0)
    assert (~same).sum() == 5 * 600
    imp_i = np.concatenate([i[~same], j[~same]])
    counts = np.bincount(imp_i, minlength=600)
    assert counts.mean() == pytest.approx(10.0) and counts.max() < 30


def test_fit_reports_auc_eer_and_threshold_by_hand() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (12, 16))
    y = np.repeat(np.arange(12), 8)
    X = centres[y] + rng.normal(0, 0.7, (y.size, 16))
    v = Verifier(impostor_ratio=5.0, random_state=0).fit(X, y)
    i, j, same = sample_pairs(y, impostor_ratio=5.0, random_state=0)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    s = (Xn[i] * Xn[j]).sum(1)
    assert v.auc_ == pytest.approx(roc_auc_score(same, s), abs=1e-9)
    assert v.n_genuine_ == 12 * 28 and v.n_impostor_ == 5 * 12 * 28
    # at the EER threshold the false-accept and false-reject rates are (nearly) equal
    far = (s[~same] >= v.threshold_).mean()
    frr = (s[same] < v.threshold_).mean()
    assert abs(far - frr) < 0.02 and v.eer_ == pytest.approx((far + frr) / 2, abs=0.01)
    # (float32 vs float64 scores may put a pair or two on the other side of the threshold)
    assert v.far_at_threshold_ == pytest.approx(far, abs=2 / (~same).sum())
    assert v.frr_at_threshold_ == pytest.approx(frr, abs=2 / same.sum())
    # TAR at FAR 1e-3: the lowest threshold letting at most floor(0.001 * impostors) through
    neg = np.sort(s[~same])[::-1]
    k = int(np.floor(1e-3 * neg.size))
    assert v.tar_at_far_[1e-3] == pytest.approx((s[same] > neg[k]).mean(), abs=2 / same.sum())
    rep = v.report()
    assert rep["threshold_rule"] == "eer" and rep["genuine_pairs"] == 336 and "tar_at_far_0.001" in rep


def test_threshold_at_a_stated_far_and_decisions() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (20, 8))
    y = np.repeat(np.arange(20), 6)
    X = centres[y] + rng.normal(0, 0.8, (y.size, 8))
    v = Verifier(far=0.01, random_state=0).fit(X, y)
    assert v.far_at_threshold_ <= 0.01
    assert v.threshold_ >= v.eer_threshold_  # a stricter threshold than the EER's
    a, b = X[:10], X[10:20]
    d = v.decision_function(a, b)
    np.testing.assert_allclose(d, v.score_samples(a, b) - v.threshold_)
    np.testing.assert_array_equal(v.predict(a, b), d >= 0)
    i, j, same = sample_pairs(y, impostor_ratio=3, random_state=1)
    ev = v.evaluate(X[i], X[j], same)
    s = v.score_samples(X[i], X[j])
    assert ev["pairs"] == i.size and ev["auc"] == pytest.approx(roc_auc_score(same, s))
    assert ev["far_at_threshold"] == pytest.approx((s[~same] >= v.threshold_).mean())
    assert ev["accuracy_at_threshold"] == pytest.approx(((s >= v.threshold_) == same).mean())


def test_euclidean_scores_are_negated_distances() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 4)
    X = rng.normal(0, 1, (5, 4))[y] + rng.normal(0, 0.3, (20, 4))
    v = Verifier(metric="euclidean", random_state=0).fit(X, y)
    np.testing.assert_allclose(v.score_samples(X[:3], X[3:6]), -np.linalg.norm(X[:3] - X[3:6], axis=1), rtol=1e-5)
    assert v.threshold_ < 0  # accept when distance <= -threshold_


def test_errors_are_clear() -> None:
    X = np.zeros((4, 3))
    with pytest.raises(NotFittedError, match="not fitted"):
        Verifier().predict(X, X)
    with pytest.raises(DataError, match="no genuine pairs"):
        Verifier().fit(np.eye(3), [0, 1, 2])
    with pytest.raises(DataError, match="no impostor pairs"):
        Verifier().fit(np.eye(3), [0, 0, 0])
    with pytest.raises(ConfigError, match="metric"):
        Verifier(metric="hamming").fit(np.eye(4), [0, 0, 1, 1])
    with pytest.raises(ConfigError, match="Verifier.far"):
        Verifier(far=2.0).fit(np.random.default_rng(0).normal(size=(4, 3)), [0, 0, 1, 1])
    with pytest.raises(ConfigError, match="impostor_ratio"):
        sample_pairs([0, 0, 1, 1], impostor_ratio=0)
