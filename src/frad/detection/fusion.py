"""frad's own detector: the trajectory's per-layer statistics fused with per-layer
Mahalanobis distances and LID estimates ("trajectory + Mahalanobis + LID fusion").

What it reads, per tapped layer ``l`` (blocks and the embedding):

- ``log M_l(x)``: the log squared Mahalanobis distance to the closest class (tied
  covariance, as in :mod:`frad.detection.mahalanobis`): how far the features lie from every
  class's Gaussian, measured in that layer's own noise scale;
- the trajectory seen from the closest class: the cosine similarity to the closest class
  centroid and the gap to the second closest (a natural face sits clearly nearest to one
  class; an adversarial one often sits between classes, or near a class at the last layers
  only);
- ``LID_l(x)`` within a fixed reference mini-batch of natural images (as in
  :mod:`frad.detection.lid`).

All columns are standardised and combined by a small MLP (one hidden layer) trained on
natural and adversarial rows with balanced classes; with ``hidden_size=0`` a logistic
regression instead.  The score is the probability of "adversarial".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ..errors import DataError
from ..recognition.similarity import pairwise_similarity
from .base import AdversarialDetector, LogisticCombiner, register_detector
from .lid import lid_mle
from .mahalanobis import class_gaussians, mahalanobis_layer_scores
from .representatives import check_features

__all__ = ["FusionDetector"]


def _cos_top2(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pairwise_similarity(torch.from_numpy(np.ascontiguousarray(x, np.float32)),
                            torch.from_numpy(np.ascontiguousarray(centroids, np.float32)), "cosine")
    top = torch.topk(s, 2, dim=1).values.double().numpy()
    return top[:, 0], top[:, 0] - top[:, 1]


class _Net(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(0.2), nn.Linear(h, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).squeeze(-1)


@register_detector
class FusionDetector(AdversarialDetector):
    """Per-layer Mahalanobis + trajectory margins + LID, fused by a small MLP; see the module doc."""

    kind = "fusion"
    title = "frad fusion (trajectory + Mahalanobis + LID)"

    def __init__(self, *, taps: Sequence[str] | None = None, k: int = 20, batch_size: int = 100,
                 hidden_size: int = 32, epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-3,
                 use_lid: bool = True, random_state: int | None = 0) -> None:
        self.taps = taps
        self.k = k
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.use_lid = use_lid
        self.random_state = random_state

    def fit_reference(self, features: Mapping[str, ArrayLike], labels: ArrayLike,
                      predictions: ArrayLike | None = None) -> FusionDetector:
        taps, feats, n = check_features(features, self.taps, "reference features")
        y = np.asarray(labels)
        keep = np.ones(n, bool) if predictions is None else np.asarray(predictions) == y
        if not keep.any():
            raise DataError("FusionDetector: no correctly classified reference rows")
        self.means_, self.precisions_ = {}, {}
        for t in taps:
            self.classes_, self.means_[t], self.precisions_[t] = class_gaussians(feats[t][keep], y[keep])
        self.reference_taps_ = list(taps)
        return self

    def columns(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, D) the fused per-layer statistics (before standardisation)."""
        _, feats, _ = check_features(features, self.reference_taps_)
        cols = []
        for t in self.reference_taps_:
            x = feats[t]
            cols.append(np.log(mahalanobis_layer_scores(x, self.means_[t], self.precisions_[t]) + 1e-6))
            top, gap = _cos_top2(x, self.means_[t])
            cols += [top, gap]
            if self.use_lid and hasattr(self, "reference_"):
                cols.append(np.log(lid_mle(x, self.reference_[t], self.k_) + 1e-6))
        return np.stack(cols, axis=1)

    def fit_features(self, features: Mapping[str, ArrayLike], y: ArrayLike, *, labels: ArrayLike | None = None,
                     groups: ArrayLike | None = None, source_ids: ArrayLike | None = None) -> FusionDetector:
        _, feats, n = check_features(features, self.reference_taps_)
        yy = np.asarray(y).astype(int).ravel()
        if yy.min() == yy.max():
            raise DataError("FusionDetector needs natural and adversarial rows")
        rng = np.random.default_rng(self.random_state)
        if self.use_lid:
            nat = np.flatnonzero(yy == 0)
            pick = np.sort(rng.choice(nat, size=min(int(self.batch_size), nat.size), replace=False))
            self.reference_ = {t: feats[t][pick].copy() for t in self.reference_taps_}
            self.k_ = max(1, min(int(self.k), pick.size - 1))
        Z = self.columns(feats)
        self.mean_ = Z.mean(axis=0)
        sd = Z.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        Zs = (Z - self.mean_) / self.scale_
        if int(self.hidden_size) == 0:
            self.combiner_ = LogisticCombiner(1.0, self.random_state).fit(Zs, yy)
        else:
            self.net_ = self._train(Zs, yy, int(rng.integers(2**31)))
        self.taps_ = list(self.reference_taps_)
        return self

    def _train(self, Z: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Net(Z.shape[1], int(self.hidden_size))
            opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            x = torch.from_numpy(Z).float()
            t = torch.from_numpy(y).float()
            pos = max(float(t.sum()), 1.0)
            w = torch.where(t > 0, 0.5 * len(t) / pos, 0.5 * len(t) / max(len(t) - pos, 1.0))
            loss_fn = nn.BCEWithLogitsLoss(weight=w)
            net.train()
            for _ in range(int(self.epochs)):  # full batch: a few thousand rows
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(x), t)
                loss.backward()
                opt.step()
        return net.eval()

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        feats, _ = self._features(features)
        Zs = (self.columns(feats) - self.mean_) / self.scale_
        if int(self.hidden_size) == 0:
            return self.combiner_.predict_proba1(Zs)
        with torch.no_grad():
            return torch.sigmoid(self.net_(torch.from_numpy(Zs).float())).double().numpy()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        arrays: dict[str, np.ndarray] = {"mean": self.mean_, "scale": self.scale_}
        for i, t in enumerate(self.reference_taps_):
            arrays[f"cmean_{i}"] = self.means_[t]
            arrays[f"precision_{i}"] = self.precisions_[t]
            if self.use_lid:
                arrays[f"reference_{i}"] = self.reference_[t]
        tensors: dict[str, Tensor] = {}
        if int(self.hidden_size) == 0:
            arrays.update(self.combiner_.arrays("lr_"))
        else:
            tensors = dict(self.net_.state_dict())
        settings = {"taps": self.reference_taps_, "k": int(self.k), "k_used": getattr(self, "k_", int(self.k)), "batch_size": int(self.batch_size),
                    "hidden_size": int(self.hidden_size), "use_lid": bool(self.use_lid), "n_columns": int(self.mean_.size)}
        return settings, arrays, tensors

    @classmethod
    def _from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    tensors: Mapping[str, Tensor], folder: Path) -> FusionDetector:
        self = cls(taps=settings["taps"], k=int(settings["k"]), batch_size=int(settings["batch_size"]),
                   hidden_size=int(settings["hidden_size"]), use_lid=bool(settings["use_lid"]))
        self.reference_taps_ = list(settings["taps"])
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self.means_ = {t: arrays[f"cmean_{i}"] for i, t in enumerate(self.reference_taps_)}
        self.precisions_ = {t: arrays[f"precision_{i}"] for i, t in enumerate(self.reference_taps_)}
        if self.use_lid:
            self.reference_ = {t: arrays[f"reference_{i}"] for i, t in enumerate(self.reference_taps_)}
            self.k_ = int(settings["k_used"])
        if self.hidden_size == 0:
            self.combiner_ = LogisticCombiner.from_arrays(arrays, "lr_")
        else:
            net = _Net(int(settings["n_columns"]), self.hidden_size)
            net.load_state_dict(tensors, strict=True)
            self.net_ = net.eval()
        return self
