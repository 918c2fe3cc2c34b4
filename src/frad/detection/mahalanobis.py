"""Mahalanobis baseline (Lee et al., "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018;
reference code: github.com/pokaxpoka/deep_Mahalanobis_detector).

Per tapped layer ``l``: class-conditional Gaussians with class means ``mu_{l,k}`` and one
covariance ``Sigma_l`` tied over classes (the empirical covariance of the class-centred
features, scikit-learn's ``EmpiricalCovariance``), fitted on the FR system's head-training
images that the classifier gets right; its inverse is a pseudo-inverse without the directions
of variance below ``PRECISION_RTOL`` (1e-6) of the largest, which hold only float rounding.
The layer score is the squared Mahalanobis distance to the closest class,

    M_l(x) = min_k (f_l(x) - mu_{l,k})^T Sigma_l^{-1} (f_l(x) - mu_{l,k}),

(the paper's confidence score with the sign flipped: higher = more adversarial).

- ``supervised=True`` (the paper's detector): the per-layer scores are combined by logistic
  regression trained on natural and adversarial rows; the score is its probability.
- ``supervised=False`` (the unsupervised form: no adversarial examples in training): each
  layer's score is standardised by the mean and standard deviation over the natural
  training rows, and the score is the mean of the standardised layer scores.

Left out: the input pre-processing step (a small gradient step on the input), which
needs a backward pass per image and changes the pixels the FR system sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor

from ..errors import DataError, NotFittedError
from .base import AdversarialDetector, LogisticCombiner, register_detector
from .representatives import check_features

__all__ = ["MahalanobisDetector", "PRECISION_RTOL", "class_gaussians", "mahalanobis_layer_scores"]


#: Directions of the tied covariance whose variance is below this share of the largest are left
#: out of the precision (a pseudo-inverse).  Features come in float32 and carry rounding noise of
#: ~1e-6 of their size (two memory layouts of dlib's network differ by 8.7e-7); dlib's embedding
#: has 46 directions with variance 3e-7 to 5e-13 of the largest, whose inverse scored that
#: noise: two runs differing only by rounding gave layer scores 2% apart (5% at most).
PRECISION_RTOL = 1e-6


def class_gaussians(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, means (K, C), precision (C, C)) with one covariance tied over the classes; the
    precision leaves out directions of variance below ``PRECISION_RTOL`` of the largest."""
    from scipy.linalg import pinvh
    from sklearn.covariance import EmpiricalCovariance

    classes, inv = np.unique(y, return_inverse=True)
    x = np.asarray(x, np.float64)
    sums = np.zeros((classes.size, x.shape[1]))
    np.add.at(sums, inv, x)
    means = sums / np.bincount(inv)[:, None]
    # a few hundred dimensions: BLAS threads only cost here (on a busy machine, 60x), so one thread
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        cov = EmpiricalCovariance(assume_centered=True, store_precision=False).fit(x - means[inv])
        precision = pinvh(cov.covariance_, atol=0.0, rtol=PRECISION_RTOL)
    return classes, means, np.asarray(precision, np.float64)


def mahalanobis_layer_scores(x: np.ndarray, means: np.ndarray, precision: np.ndarray, block: int = 4096) -> np.ndarray:
    """(N,) squared Mahalanobis distance of each row to its closest class mean."""
    x = np.asarray(x, np.float64)
    pm = means @ precision  # (K, C)
    mpm = np.einsum("kc,kc->k", pm, means)
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], block):
        xb = x[s : s + block]
        xpx = np.sum((xb @ precision) * xb, axis=1)
        d = xpx[:, None] - 2.0 * xb @ pm.T + mpm[None, :]
        out[s : s + block] = np.maximum(d.min(axis=1), 0.0)
    return out


@register_detector
class MahalanobisDetector(AdversarialDetector):
    """Per-layer Mahalanobis distance to the closest class (tied covariance); see the module doc."""

    kind = "mahalanobis"
    title = "Mahalanobis (Lee et al. 2018)"

    def __init__(self, *, taps: Sequence[str] | None = None, supervised: bool = True, C: float = 1.0,
                 random_state: int | None = 0) -> None:
        self.taps = taps
        self.supervised = supervised
        self.C = C
        self.random_state = random_state

    @property
    def needs_adversarials(self) -> bool:  # type: ignore[override]
        return bool(self.supervised)

    def fit_reference(
        self, features: Mapping[str, ArrayLike], labels: ArrayLike, predictions: ArrayLike | None = None
    ) -> MahalanobisDetector:
        taps, feats, n = check_features(features, self.taps, "reference features")
        y = np.asarray(labels)
        keep = np.ones(n, bool) if predictions is None else np.asarray(predictions) == y
        if not keep.any():
            raise DataError("MahalanobisDetector: no correctly classified reference rows")
        self.means_: dict[str, np.ndarray] = {}
        self.precisions_: dict[str, np.ndarray] = {}
        for t in taps:
            self.classes_, self.means_[t], self.precisions_[t] = class_gaussians(feats[t][keep], y[keep])
        self.reference_taps_ = list(taps)
        return self

    def layer_scores(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, layers) squared Mahalanobis distances to the closest class, one column per tap."""
        if not hasattr(self, "means_"):
            raise NotFittedError("MahalanobisDetector: call fit_reference(features, labels) first")
        _, feats, n = check_features(features, self.reference_taps_)
        return np.stack([mahalanobis_layer_scores(feats[t], self.means_[t], self.precisions_[t])
                         for t in self.reference_taps_], axis=1)

    def fit_features(self, features: Mapping[str, ArrayLike], y: ArrayLike, *, labels: ArrayLike | None = None,
                     groups: ArrayLike | None = None, source_ids: ArrayLike | None = None) -> MahalanobisDetector:
        S = self.layer_scores(features)
        yy = np.asarray(y).astype(int).ravel()
        if self.supervised:
            if yy.min() == yy.max():
                raise DataError("MahalanobisDetector(supervised=True) needs natural and adversarial rows")
            self.combiner_ = LogisticCombiner(self.C, self.random_state).fit(S, yy)
        else:
            nat = S[yy == 0]
            if nat.shape[0] < 2:
                raise DataError("MahalanobisDetector(supervised=False) needs at least 2 natural rows")
            self.nat_mean_ = nat.mean(axis=0)
            sd = nat.std(axis=0)
            self.nat_scale_ = np.where(sd > 1e-12, sd, 1.0)
        self.taps_ = list(self.reference_taps_)
        return self

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        self._check_fitted()
        S = self.layer_scores(features)
        if self.supervised:
            return self.combiner_.predict_proba1(S)
        return ((S - self.nat_mean_) / self.nat_scale_).mean(axis=1)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        arrays: dict[str, np.ndarray] = {"classes": np.asarray(self.classes_)}
        for i, t in enumerate(self.reference_taps_):
            arrays[f"mean_{i}"] = self.means_[t]
            arrays[f"precision_{i}"] = self.precisions_[t]
        if self.supervised:
            arrays.update(self.combiner_.arrays("lr_"))
        else:
            arrays.update(nat_mean=self.nat_mean_, nat_scale=self.nat_scale_)
        return {"supervised": bool(self.supervised), "C": self.C, "taps": list(self.reference_taps_)}, arrays, {}

    @classmethod
    def _from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    tensors: Mapping[str, Tensor], folder: Path) -> MahalanobisDetector:
        self = cls(taps=settings["taps"], supervised=bool(settings["supervised"]), C=float(settings["C"]))
        self.reference_taps_ = list(settings["taps"])
        self.classes_ = arrays["classes"]
        self.means_ = {t: arrays[f"mean_{i}"] for i, t in enumerate(self.reference_taps_)}
        self.precisions_ = {t: arrays[f"precision_{i}"] for i, t in enumerate(self.reference_taps_)}
        if self.supervised:
            self.combiner_ = LogisticCombiner.from_arrays(arrays, "lr_", self.C)
        else:
            self.nat_mean_, self.nat_scale_ = arrays["nat_mean"], arrays["nat_scale"]
        return self
