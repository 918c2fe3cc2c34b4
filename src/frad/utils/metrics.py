"""Binary decision metrics shared by verification and detection: ROC, AUC, EER, TAR@FAR,
the LFW k-fold accuracy protocol, and bootstrap confidence intervals.

Convention: ``labels`` are 1 for the positive class (same person / adversarial) and 0 for
the negative class, and ``scores`` are higher for the positive class.  Callers with a
distance (lower = same person) pass ``-distance`` and negate thresholds back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "roc",
    "auc",
    "eer",
    "threshold_at_far",
    "tar_at_far",
    "accuracy_at",
    "best_threshold",
    "kfold_accuracy",
    "KFoldResult",
    "bootstrap_ci",
    "rank_auc",
]


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if not y.any() or y.all():
        raise ValueError("need both positive and negative samples")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y, s


def roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the ROC (scikit-learn's ``roc_curve``, all points kept)."""
    y, s = _check(labels, scores)
    return roc_curve(y, s, drop_intermediate=False)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve."""
    y, s = _check(labels, scores)
    return float(roc_auc_score(y, s))


def eer(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold: where the false-accept and false-reject rates meet.

    The rate is interpolated linearly between the two ROC points that bracket the crossing;
    the threshold is the score at the bracketing point with the smaller gap (accept if
    ``score >= threshold``).
    """
    fpr, tpr, thr = roc(labels, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # increases from -1 to 1 along the curve
    i = int(np.searchsorted(diff, 0.0))
    i = min(max(i, 1), len(diff) - 1)
    d0, d1 = diff[i - 1], diff[i]
    w = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    rate = float((fpr[i - 1] + w * (fpr[i] - fpr[i - 1]) + fnr[i - 1] + w * (fnr[i] - fnr[i - 1])) / 2)
    j = i if abs(d1) <= abs(d0) else i - 1
    t = float(thr[j]) if np.isfinite(thr[j]) else float(thr[min(j + 1, len(thr) - 1)])
    return rate, t


def threshold_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> float:
    """The lowest threshold whose false-accept rate (negatives with ``score >= t``) is <= ``far``."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    y, s = _check(labels, scores)
    neg = np.sort(s[~y])[::-1]  # descending
    k = int(np.floor(far * neg.size))  # at most k negatives may be accepted
    if k >= neg.size:
        return float(neg[-1])
    # accept scores strictly above the (k+1)-th highest negative
    return float(np.nextafter(neg[k], np.inf))


def tar_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> float:
    """True-accept rate at the threshold chosen by :func:`threshold_at_far`."""
    y, s = _check(labels, scores)
    t = threshold_at_far(y, s, far)
    return float((s[y] >= t).mean())


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Share of correct decisions when ``score >= threshold`` means positive."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    return float(((s >= threshold) == y).mean())


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest accuracy (midpoint between neighbouring scores), and it."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    n = s.size
    # threshold before position i: predict positive for s_sorted[i:]
    pos_from = np.concatenate([np.cumsum(y_sorted[::-1])[::-1], [0]])  # TP for cut i
    neg_before = np.concatenate([[0], np.cumsum(~y_sorted)])  # TN for cut i
    acc = (pos_from + neg_before) / n
    # only cut between distinct values
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s_sorted[1:] != s_sorted[:-1]
    acc = np.where(valid, acc, -1.0)
    i = int(np.argmax(acc))
    if i == 0:
        t = s_sorted[0] - 1.0
    elif i == n:
        t = s_sorted[-1] + 1.0
    else:
        t = (s_sorted[i - 1] + s_sorted[i]) / 2.0
    return float(t), float(acc[i])


@dataclass(frozen=True)
class KFoldResult:
    """Accuracy per fold with the threshold chosen on the other folds (LFW's protocol)."""

    fold_accuracy: np.ndarray
    fold_threshold: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.fold_accuracy.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (LFW's sigma, ddof=1)."""
        return float(self.fold_accuracy.std(ddof=1)) if self.fold_accuracy.size > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean (LFW's S_E = sigma / sqrt(folds))."""
        return self.std / np.sqrt(self.fold_accuracy.size)


def kfold_accuracy(labels: np.ndarray, scores: np.ndarray, folds: Sequence[int] | np.ndarray) -> KFoldResult:
    """LFW's k-fold protocol: each fold is scored at the best threshold of the other folds."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    f = np.asarray(folds).ravel()
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accs, thrs = [], []
    for k in ids:
        train = f != k
        t, _ = best_threshold(y[train], s[train])
        accs.append(accuracy_at(y[~train], s[~train], t))
        thrs.append(t)
    return KFoldResult(np.array(accs), np.array(thrs))


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] = auc,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(labels, scores)``, resampling positives and
    negatives separately (stratified) so every resample has both classes."""
    y, s = _check(labels, scores)
    rng = np.random.default_rng(random_state)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        ip, ineg = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        if statistic is auc:  # the same number, without scikit-learn's per-call input checks
            stats[b] = rank_auc(s[ineg], s[ip])
        else:
            idx = np.concatenate([ip, ineg])
            stats[b] = statistic(y[idx], s[idx])
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def rank_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUC from the two score samples: P(pos > neg) + P(pos == neg) / 2 (Mann-Whitney U / n0 n1).

    The same number as :func:`auc` (ties count one half), computed by sorting the negatives
    once and placing the positives with ``searchsorted``: about 30x faster than going through
    scikit-learn's input checks, for bootstraps and per-epoch validation.
    """
    neg = np.sort(np.asarray(negatives, dtype=np.float64).ravel())
    pos = np.asarray(positives, dtype=np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise ValueError("need both positive and negative samples")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("scores contain NaN or infinity")
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    upto = np.searchsorted(neg, pos, side="right")  # ... below or equal
    return float((below.sum() + 0.5 * (upto - below).sum()) / (neg.size * pos.size))
