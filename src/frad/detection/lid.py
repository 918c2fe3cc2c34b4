"""LID baseline (Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic
Dimensionality", ICLR 2018; reference code: github.com/xingjunm/lid_adversarial_subspace_detection).

Per tapped layer, the maximum-likelihood estimate of the local intrinsic dimensionality of
an image's pooled features among ``k`` nearest neighbours in a mini-batch of natural images,

    LID(x) = - ( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^{-1},

with ``r_i`` the Euclidean distance to the ``i``-th nearest neighbour.  The per-layer LIDs
are combined by logistic regression trained on natural and adversarial rows (the paper's
detector); the score is its probability of "adversarial".

Mini-batch: Ma et al. estimate each adversarial's LID within the mini-batch of naturals it
was crafted from.  A deployed detector scores images one at a time, so frad keeps one
fixed reference mini-batch of ``batch_size`` natural training images (drawn with
``random_state``) and estimates every image's LID within it; a reference image itself does
not count as its own neighbour (a neighbour at distance 0 is skipped).  With fewer natural
rows than ``batch_size`` (tiny runs) all are used and ``k`` is capped at their number - 1
(``k_``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ..errors import ConfigError, DataError
from .base import AdversarialDetector, LogisticCombiner, register_detector
from .representatives import check_features

__all__ = ["LIDDetector", "lid_mle"]


def lid_mle(x: np.ndarray, reference: np.ndarray, k: int, *, skip_self: bool = True) -> np.ndarray:
    """(N,) LID estimates of the rows of ``x`` among their ``k`` nearest rows of ``reference``.

    With ``skip_self`` a neighbour at distance exactly 0 (the row itself) is skipped.
    """
    xq = torch.from_numpy(np.ascontiguousarray(x, np.float64))
    r = torch.from_numpy(np.ascontiguousarray(reference, np.float64))
    if r.shape[0] < k + (1 if skip_self else 0):
        raise DataError(f"LID: the reference batch has {r.shape[0]} rows, fewer than k={k} (+1)")
    d = torch.cdist(xq, r, compute_mode="donot_use_mm_for_euclid_dist")  # exact: a row is 0 from itself
    take = k + 1 if skip_self else k
    near = torch.topk(d, take, dim=1, largest=False).values  # ascending
    if skip_self:
        self_hit = near[:, 0] <= 0.0
        near = torch.where(self_hit[:, None], near[:, 1:], near[:, :-1])
    near = near.clamp_min(1e-12)
    ratio = torch.log(near / near[:, -1:])
    m = ratio.mean(dim=1)
    lid = -1.0 / torch.where(m < 0, m, torch.full_like(m, -1e-12))
    return lid.numpy()


@register_detector
class LIDDetector(AdversarialDetector):
    """Per-layer local intrinsic dimensionality, combined by logistic regression; see the module doc."""

    kind = "lid"
    title = "LID (Ma et al. 2018)"

    def __init__(self, *, taps: Sequence[str] | None = None, k: int = 20, batch_size: int = 100, C: float = 1.0,
                 random_state: int | None = 0) -> None:
        self.taps = taps
        self.k = k
        self.batch_size = batch_size
        self.C = C
        self.random_state = random_state

    def layer_scores(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, layers) LID estimates within the reference mini-batch."""
        _, feats, _ = check_features(features, self.taps_)
        return np.stack([lid_mle(feats[t], self.reference_[t], self.k_) for t in self.taps_], axis=1)

    def fit_features(self, features: Mapping[str, ArrayLike], y: ArrayLike, *, labels: ArrayLike | None = None,
                     groups: ArrayLike | None = None, source_ids: ArrayLike | None = None) -> LIDDetector:
        if int(self.k) < 1 or int(self.batch_size) <= int(self.k):
            raise ConfigError(f"LIDDetector: need 1 <= k < batch_size, got k={self.k}, batch_size={self.batch_size}")
        taps, feats, n = check_features(features, self.taps)
        yy = np.asarray(y).astype(int).ravel()
        nat = np.flatnonzero(yy == 0)
        if nat.size < 3 or yy.min() == yy.max():
            raise DataError("LIDDetector needs adversarial rows and at least 3 natural rows")
        rng = np.random.default_rng(self.random_state)
        pick = np.sort(rng.choice(nat, size=min(int(self.batch_size), nat.size), replace=False))
        self.reference_ = {t: feats[t][pick].copy() for t in taps}
        # a small reference batch (tiny runs) caps k: a reference row skips itself
        self.k_ = min(int(self.k), pick.size - 1)
        self.taps_ = list(taps)
        S = self.layer_scores(feats)
        self.combiner_ = LogisticCombiner(self.C, self.random_state).fit(S, yy)
        return self

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        feats, _ = self._features(features)
        return self.combiner_.predict_proba1(self.layer_scores(feats))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        arrays = {f"reference_{i}": self.reference_[t] for i, t in enumerate(self.taps_)}
        arrays.update(self.combiner_.arrays("lr_"))
        return {"k": int(self.k), "k_used": self.k_, "batch_size": int(self.batch_size), "C": self.C, "taps": self.taps_}, arrays, {}

    @classmethod
    def _from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    tensors: Mapping[str, Tensor], folder: Path) -> LIDDetector:
        self = cls(taps=settings["taps"], k=int(settings["k"]), batch_size=int(settings["batch_size"]),
                   C=float(settings["C"]))
        self.taps_ = list(settings["taps"])
        self.k_ = int(settings["k_used"])
        self.reference_ = {t: arrays[f"reference_{i}"] for i, t in enumerate(self.taps_)}
        self.combiner_ = LogisticCombiner.from_arrays(arrays, "lr_", self.C)
        return self
