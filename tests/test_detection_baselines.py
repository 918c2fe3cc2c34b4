"""The baselines against independent computations: SciPy/scikit-learn for Mahalanobis,
the LID formula in plain NumPy, scikit-learn's NearestNeighbors for deep k-NN."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import EmpiricalCovariance
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from frad.detection import DeepKNNDetector, LIDDetector, MahalanobisDetector
from frad.detection.lid import lid_mle


def _feats(rng, n, shift=0.0):
    """Pooled features are float32 (as the feature cache stores them)."""
    return {"a": (rng.normal(size=(n, 5)) + shift).astype(np.float32),
            "b": (rng.normal(size=(n, 3)) * 2 + shift).astype(np.float32)}


def test_mahalanobis_layer_scores_match_scipy():
    rng = np.random.default_rng(0)
    ref = _feats(rng, 120)
    lab = np.repeat(np.arange(4), 30)
    for t in ref:
        ref[t][:, 0] += (lab * 1.5).astype(np.float32)  # separated classes
    det = MahalanobisDetector(taps=["a", "b"]).fit_reference(ref, lab)
    q = _feats(rng, 15, shift=0.5)
    got = det.layer_scores(q)
    for j, t in enumerate(["a", "b"]):
        x = ref[t].astype(np.float64)
        means = np.stack([x[lab == k].mean(0) for k in range(4)])
        vi = EmpiricalCovariance(assume_centered=True).fit(x - means[lab]).precision_
        want = np.array([min(mahalanobis(v, m, vi) ** 2 for m in means) for v in q[t].astype(np.float64)])
        np.testing.assert_allclose(got[:, j], want, rtol=1e-8)


def test_mahalanobis_precision_ignores_directions_of_rounding_noise():
    # a layer whose features span 3 of 6 dimensions (like dlib's embedding, whose covariance has
    # 46 directions of variance 3e-7..5e-13 of the largest): float32 rounding fills the other 3
    from frad.detection.mahalanobis import PRECISION_RTOL, class_gaussians, mahalanobis_layer_scores

    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(6, 3)))[0].T  # 3 x 6, orthonormal rows
    lab = np.repeat(np.arange(4), 50)
    x = ((rng.normal(size=(200, 3)) + lab[:, None]) @ basis * 10).astype(np.float32)
    q = ((rng.normal(size=(30, 3)) + 1.5) @ basis * 10).astype(np.float32)
    q_rounded = (q.astype(np.float64) * (1 + 1e-6 * rng.normal(size=q.shape))).astype(np.float32)
    classes, means, precision = class_gaussians(x, lab)
    s, s_rounded = mahalanobis_layer_scores(q, means, precision), mahalanobis_layer_scores(q_rounded, means, precision)
    np.testing.assert_allclose(s_rounded, s, rtol=1e-4)
    # within the 3-d span it is the inverse of the covariance there: the distance computed in
    # the span's coordinates
    z, zm = q.astype(np.float64) @ basis.T, means @ basis.T
    cov = np.cov((x.astype(np.float64) @ basis.T - zm[lab]).T, bias=True)
    d = z[:, None, :] - zm[None]
    want = np.einsum("nkd,de,nke->nk", d, np.linalg.inv(cov), d).min(1)
    np.testing.assert_allclose(s, want, rtol=1e-4)
    # the plain inverse (scikit-learn's precision_) scores the rounding: the check above can fail
    plain = EmpiricalCovariance(assume_centered=True).fit(x.astype(np.float64) - means[lab]).precision_
    p1, p2 = mahalanobis_layer_scores(q, means, plain), mahalanobis_layer_scores(q_rounded, means, plain)
    assert np.max(np.abs(p2 - p1) / p1) > 1e-2
    assert PRECISION_RTOL == 1e-6


def test_mahalanobis_supervised_is_logistic_regression_of_layer_scores():
    rng = np.random.default_rng(1)
    ref = _feats(rng, 80)
    lab = np.repeat(np.arange(4), 20)
    X = {t: np.concatenate([_feats(rng, 40)[t], _feats(rng, 40, 2.0)[t]]) for t in ref}
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    det = MahalanobisDetector(taps=["a", "b"]).fit_reference(ref, lab).fit_features(X, y)
    S = det.layer_scores(X)
    Z = (S - S.mean(0)) / S.std(0)
    # the regularised optimum, reached by another solver run to convergence
    lr = LogisticRegression(tol=1e-12, max_iter=10000, class_weight="balanced").fit(Z, y)
    np.testing.assert_allclose(det.score_features(X), lr.predict_proba(Z)[:, 1], rtol=1e-6)
    assert det.score_features(X)[y == 1].mean() > det.score_features(X)[y == 0].mean()
    # unsupervised: mean of per-layer z-scores over the naturals
    u = MahalanobisDetector(taps=["a", "b"], supervised=False).fit_reference(ref, lab).fit_features(X, y)
    nat = S[y == 0]
    np.testing.assert_allclose(u.score_features(X), ((S - nat.mean(0)) / nat.std(0)).mean(1), rtol=1e-10)


def _lid_numpy(x, ref, k):
    out = []
    for v in x:
        d = np.sqrt(((ref - v) ** 2).sum(1))
        d = np.sort(d)
        d = d[d > 0][:k] if (d == 0).any() else d[:k]
        out.append(-1.0 / np.mean(np.log(d / d[-1])))
    return np.array(out)


def test_lid_matches_the_formula_in_numpy():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(50, 6))
    q = rng.normal(size=(10, 6))
    np.testing.assert_allclose(lid_mle(q, ref, 10), _lid_numpy(q, ref, 10), rtol=1e-9)
    # a reference row does not count itself
    np.testing.assert_allclose(lid_mle(ref[:5], ref, 10), _lid_numpy(ref[:5], ref, 10), rtol=1e-9)
    # points on a 2-d plane in 6-d space: LID near 2; full 6-d Gaussian: clearly higher
    plane = np.c_[rng.normal(size=(2000, 2)), np.zeros((2000, 4))]
    assert 1.5 < np.median(lid_mle(plane[:100], plane, 20)) < 2.6
    det = LIDDetector(taps=["a"], k=5, batch_size=30)
    X = {"a": np.r_[rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) * 3].astype(np.float32)}
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    det.fit_features(X, y)
    np.testing.assert_allclose(det.layer_scores(X)[:, 0], _lid_numpy(X["a"].astype(np.float64), det.reference_["a"].astype(np.float64), 5), rtol=1e-9)


def test_deep_knn_matches_sklearn_nearest_neighbors():
    rng = np.random.default_rng(3)
    lab = np.repeat(np.arange(3), 30)
    train = {"a": rng.normal(size=(90, 4)) + lab[:, None], "b": rng.normal(size=(90, 2)) + 2 * lab[:, None]}
    k = 7
    det = DeepKNNDetector(taps=["a", "b"], k=k).fit_reference(train, lab)
    cal_lab = np.repeat(np.arange(3), 10)
    cal = {"a": rng.normal(size=(30, 4)) + cal_lab[:, None], "b": rng.normal(size=(30, 2)) + 2 * cal_lab[:, None]}
    q = {"a": rng.normal(size=(12, 4)) + 1, "b": rng.normal(size=(12, 2)) + 2}
    det.fit_features(cal, np.zeros(30, int), labels=cal_lab)

    def alpha(feats):
        counts = np.zeros((len(feats["a"]), 3))
        for t in ("a", "b"):
            idx = NearestNeighbors(n_neighbors=k).fit(train[t]).kneighbors(feats[t], return_distance=False)
            for j in range(3):
                counts[:, j] += (lab[idx] == j).sum(1)
        return 2 * k - counts

    np.testing.assert_array_equal(det.nonconformity(q), alpha(q))
    A = alpha(cal)[np.arange(30), cal_lab]
    aq = alpha(q)
    p = np.array([[np.mean(A >= aq[i, j]) for j in range(3)] for i in range(12)])
    np.testing.assert_allclose(det.score_features(q), 1 - p.max(1))
    assert det.needs_adversarials is False
    with pytest.raises(Exception, match="labels"):
        DeepKNNDetector(taps=["a"], k=3).fit_reference(train, lab).fit_features(cal, np.zeros(30, int))
