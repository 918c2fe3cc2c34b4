"""Deep k-NN baseline (Papernot & McDaniel, "Deep k-Nearest Neighbors: Towards Confident,
Interpretable and Robust Deep Learning", 2018; reference code: cleverhans' ``dknn`` tutorial).

For every tapped layer, the ``k`` nearest head-training images (Euclidean distance on the
pooled features; the paper used locality-sensitive hashing for speed, frad searches
exactly).  The non-conformity of image ``x`` with label ``j`` is

    alpha_j(x) = sum_l | { neighbours of x at layer l whose label is not j } |.

A calibration set of labelled natural images gives the non-conformities ``A`` of their true
labels.  The p-value of label ``j`` is ``p_j(x) = |{a in A : a >= alpha_j(x)}| / |A|``; the
prediction is the label with the largest p-value and its p-value is the *credibility*.
Adversarial images have low credibility, so the score is ``1 - credibility`` (higher = more
adversarial).  No adversarial examples are needed: ``fit_features`` uses only the natural
rows (``y == 0``) and their ``labels`` as the calibration set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ..errors import ConfigError, DataError, NotFittedError
from .base import AdversarialDetector, register_detector
from .representatives import check_features

__all__ = ["DeepKNNDetector", "knn_label_counts"]


def knn_label_counts(x: np.ndarray, train: np.ndarray, train_codes: np.ndarray, n_classes: int, k: int,
                     block: int = 2048) -> np.ndarray:
    """(N, K) how many of each row's ``k`` nearest training rows (Euclidean) carry each class code."""
    t64 = torch.from_numpy(np.ascontiguousarray(train, np.float64))
    codes = torch.from_numpy(np.asarray(train_codes, np.int64))
    out = np.zeros((x.shape[0], n_classes), np.int64)
    for s in range(0, x.shape[0], block):
        q = torch.from_numpy(np.ascontiguousarray(x[s : s + block], np.float32))
        # float64 so that the matrix-product form of the distances keeps the neighbours' order
        d = torch.cdist(q.double(), t64)
        idx = torch.topk(d, k, dim=1, largest=False).indices
        lab = codes[idx]
        cnt = torch.zeros(q.shape[0], n_classes, dtype=torch.int64)
        cnt.scatter_add_(1, lab, torch.ones_like(lab))
        out[s : s + block] = cnt.numpy()
    return out


@register_detector
class DeepKNNDetector(AdversarialDetector):
    """Credibility of the deep k-NN's prediction over all tapped layers; see the module doc."""

    kind = "deep_knn"
    title = "deep k-NN (Papernot & McDaniel 2018)"
    needs_adversarials = False

    def __init__(self, *, taps: Sequence[str] | None = None, k: int = 75) -> None:
        self.taps = taps
        self.k = k

    def fit_reference(self, features: Mapping[str, ArrayLike], labels: ArrayLike,
                      predictions: ArrayLike | None = None) -> DeepKNNDetector:
        """Store the training features and labels the neighbours are searched among (all rows)."""
        taps, feats, n = check_features(features, self.taps, "reference features")
        if int(self.k) < 1:
            raise ConfigError(f"DeepKNNDetector: k must be >= 1, got {self.k}")
        self.k_ = min(int(self.k), n)  # fewer training rows than k (tiny runs): all of them
        self.classes_, codes = np.unique(np.asarray(labels), return_inverse=True)
        self.train_codes_ = codes.astype(np.int64)
        self.train_ = {t: feats[t].copy() for t in taps}
        self.reference_taps_ = list(taps)
        return self

    def nonconformity(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, K) alpha_j(x) for every class j."""
        if not hasattr(self, "train_"):
            raise NotFittedError("DeepKNNDetector: call fit_reference(features, labels) first")
        _, feats, n = check_features(features, self.reference_taps_)
        K = self.classes_.size
        counts = np.zeros((n, K), np.int64)
        for t in self.reference_taps_:
            counts += knn_label_counts(feats[t], self.train_[t], self.train_codes_, K, self.k_)
        return len(self.reference_taps_) * self.k_ - counts

    def fit_features(self, features: Mapping[str, ArrayLike], y: ArrayLike, *, labels: ArrayLike | None = None,
                     groups: ArrayLike | None = None, source_ids: ArrayLike | None = None) -> DeepKNNDetector:
        if labels is None:
            raise DataError("DeepKNNDetector needs the natural rows' labels (the calibration set)")
        yy = np.asarray(y).astype(int).ravel()
        lab = np.asarray(labels).ravel()
        nat = np.flatnonzero(yy == 0)
        if nat.size == 0:
            raise DataError("DeepKNNDetector: no natural rows to calibrate on")
        _, feats, _ = check_features(features, self.reference_taps_)
        alpha = self.nonconformity({t: feats[t][nat] for t in self.reference_taps_})
        pos = np.searchsorted(self.classes_, lab[nat])
        known = (pos < self.classes_.size) & (self.classes_[np.minimum(pos, self.classes_.size - 1)] == lab[nat])
        if not known.any():
            raise DataError("DeepKNNDetector: no calibration row's label is a class of the training set")
        self.calibration_ = np.sort(alpha[np.flatnonzero(known), pos[known]]).astype(np.int64)
        self.taps_ = list(self.reference_taps_)
        return self

    def p_values(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, K) share of calibration non-conformities >= alpha_j(x)."""
        alpha = self.nonconformity(features)
        A = self.calibration_
        ge = A.size - np.searchsorted(A, alpha, side="left")
        return ge / A.size

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        feats, _ = self._features(features)
        return 1.0 - self.p_values(feats).max(axis=1)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        arrays: dict[str, np.ndarray] = {"classes": np.asarray(self.classes_), "train_codes": self.train_codes_,
                                         "calibration": self.calibration_}
        for i, t in enumerate(self.reference_taps_):
            arrays[f"train_{i}"] = self.train_[t]
        return {"k": int(self.k), "k_used": self.k_, "taps": self.reference_taps_}, arrays, {}

    @classmethod
    def _from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    tensors: Mapping[str, Tensor], folder: Path) -> DeepKNNDetector:
        self = cls(taps=settings["taps"], k=int(settings["k"]))
        self.reference_taps_ = list(settings["taps"])
        self.k_ = int(settings["k_used"])
        self.classes_ = arrays["classes"]
        self.train_codes_ = arrays["train_codes"]
        self.calibration_ = arrays["calibration"]
        self.train_ = {t: arrays[f"train_{i}"] for i, t in enumerate(self.reference_taps_)}
        return self
