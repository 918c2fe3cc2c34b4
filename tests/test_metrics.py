"""Decision metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from frad.utils import metrics as M


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = rng.random(2000) < 0.4
    s = rng.normal(size=2000) + 1.5 * y
    return y, s


def test_auc_and_roc_match_sklearn(data) -> None:
    y, s = data
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s))
    fpr, tpr, _ = M.roc(y, s)
    f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)


def test_eer_hand_case() -> None:
    # negatives 0..9, positives 5..14 -> at t = 10 (accept >= 10): FAR 0, FRR 5/10; at t = 5: FAR .5, FRR 0
    y = np.r_[np.zeros(10), np.ones(10)]
    s = np.r_[np.arange(10), np.arange(5, 15)].astype(float)
    rate, thr = M.eer(y, s)
    far = ((s >= thr) & (y == 0)).sum() / 10
    frr = ((s < thr) & (y == 1)).sum() / 10
    assert rate == pytest.approx(0.25, abs=0.051)
    assert abs(far - frr) <= 0.1


def test_eer_is_where_rates_cross(data) -> None:
    y, s = data
    rate, thr = M.eer(y, s)
    far = ((s >= thr) & ~y).sum() / (~y).sum()
    frr = ((s < thr) & y).sum() / y.sum()
    assert abs(far - frr) < 0.01
    assert rate == pytest.approx((far + frr) / 2, abs=0.005)


def test_threshold_at_far_keeps_the_false_accept_rate(data) -> None:
    y, s = data
    for far in (0.0, 1e-3, 0.01, 0.1):
        t = M.threshold_at_far(y, s, far)
        assert ((s >= t) & ~y).sum() / (~y).sum() <= far
        # and it is the lowest such threshold: one step lower exceeds the rate
        lower = np.max(s[~y][s[~y] < t]) if (s[~y] < t).any() else None
        if lower is not None:
            assert ((s >= lower) & ~y).sum() / (~y).sum() > far
    assert M.tar_at_far(y, s, 0.1) == pytest.approx((s[y] >= M.threshold_at_far(y, s, 0.1)).mean())


def test_best_threshold_hand_case() -> None:
    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    t, acc = M.best_threshold(y, s)
    assert acc == pytest.approx(5 / 6)
    assert M.accuracy_at(y, s, t) == pytest.approx(5 / 6)


def test_kfold_uses_other_folds_for_the_threshold() -> None:
    # fold 0 alone would prefer threshold ~10, the other folds ~0: fold 0 gets the others' threshold
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    s = np.array([12.0, 8.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    f = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    r = M.kfold_accuracy(y, s, f)
    assert r.fold_accuracy.tolist() == [0.5, 1.0, 1.0, 1.0]
    assert r.mean == pytest.approx(0.875)
    assert r.std == pytest.approx(np.std([0.5, 1, 1, 1], ddof=1))


def test_bootstrap_interval_covers_the_estimate(data) -> None:
    y, s = data
    lo, hi = M.bootstrap_ci(y, s, n_resamples=200, random_state=0)
    assert lo < M.auc(y, s) < hi and hi - lo < 0.1
    assert (lo, hi) == M.bootstrap_ci(y, s, n_resamples=200, random_state=0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        M.auc(np.ones(3), np.arange(3.0))
    with pytest.raises(ValueError, match="NaN"):
        M.auc(np.array([0, 1]), np.array([0.0, np.nan]))
