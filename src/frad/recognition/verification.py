"""1:1 face verification: two embeddings are the same person when their similarity reaches a threshold.

The paper (Sec. 5.3.2) scores pairs by cosine similarity and sets the threshold at the EER
of a ROC over genuine and impostor pairs.  :class:`Verifier` builds that ROC from the
embeddings it is fitted on, which in frad's protocol are the head-training and validation
images only (the detector's natural and source images stay out): every genuine pair, and
impostor pairs sampled uniformly at ``impostor_ratio`` times as many (the paper stresses low
false-accept rates, which needs many impostors).  The threshold sits at the EER, or at a
stated false-accept rate (``far``); AUC, EER and TAR at FAR 1e-3 are reported.

Scores are similarities, higher = same person: the cosine similarity, or the negated
Euclidean distance, so ``threshold_`` is on that scale too (for 'euclidean', same person when
``-distance >= threshold_``, i.e. ``distance <= -threshold_``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..utils import metrics
from .head_training import NotFittedError
from .similarity import check_metric, paired_similarity, pairwise_similarity

__all__ = ["Verifier", "sample_pairs", "NotFittedError"]


def _genuine_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size < 2:
            continue
        i, j = np.triu_indices(idx.size, k=1)
        a.append(idx[i])
        b.append(idx[j])
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64)


def sample_pairs(
    labels: np.ndarray | Sequence[int],
    *,
    impostor_ratio: float = 10.0,
    max_genuine: int | None = None,
    max_impostors: int | None = 10_000_000,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, same)``: every genuine pair (i < j, same label; subsampled to ``max_genuine``
    if given) and ``impostor_ratio`` times as many distinct impostor pairs drawn uniformly
    (all of them if fewer exist; at most ``max_impostors``)."""
    y = np.asarray(labels).ravel()
    n = y.size
    if impostor_ratio <= 0:
        raise ConfigError(f"impostor_ratio must be > 0, got {impostor_ratio}")
    rng = np.random.default_rng(random_state)
    gi, gj = _genuine_pairs(y)
    if max_genuine is not None and gi.size > max_genuine:
        keep = np.sort(rng.choice(gi.size, size=int(max_genuine), replace=False))
        gi, gj = gi[keep], gj[keep]
    if gi.size == 0:
        raise DataError("no genuine pairs: verification needs at least one identity with two images")
    _, counts = np.unique(y, return_counts=True)
    total_imp = n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())
    if total_imp == 0:
        raise DataError("no impostor pairs: verification needs at least two identities")
    want = int(round(impostor_ratio * gi.size))
    if max_impostors is not None:
        want = min(want, int(max_impostors))
    want = max(1, min(want, total_imp))
    if want > total_imp // 2:  # dense: enumerate every impostor pair and choose
        i, j = np.triu_indices(n, k=1)
        m = y[i] != y[j]
        i, j = i[m], j[m]
        pick = np.sort(rng.choice(i.size, size=want, replace=False))
        ii, jj = i[pick].astype(np.int64), j[pick].astype(np.int64)
    else:  # sparse: rejection-sample distinct unordered pairs
        seen = np.zeros(0, np.int64)
        while seen.size < want:
            k = int((want - seen.size) * 1.3) + 16
            a = rng.integers(0, n, k)
            b = rng.integers(0, n, k)
            m = y[a] != y[b]
            lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
            seen = np.unique(np.concatenate([seen, lo * n + hi]))
        seen = rng.permutation(seen)[:want]
        seen.sort()
        ii, jj = seen // n, seen % n
    i = np.concatenate([gi, ii])
    j = np.concatenate([gj, jj])
    same = np.concatenate([np.ones(gi.size, bool), np.zeros(ii.size, bool)])
    return i, j, same


class Verifier:
    """Cosine (or Euclidean) verification with a threshold at the EER or at a stated FAR.

    After ``fit(embeddings, labels)``: ``threshold_``, ``auc_``, ``eer_``, ``eer_threshold_``,
    ``tar_at_far_`` (dict FAR -> TAR for each of ``report_fars``), ``n_genuine_``,
    ``n_impostor_``.  ``far=None`` puts the threshold at the EER (the paper); a number puts it
    at the lowest threshold whose false-accept rate on the impostor pairs is at most ``far``.
    """

    def __init__(
        self,
        *,
        metric: str = "cosine",
        far: float | None = None,
        impostor_ratio: float = 10.0,
        max_genuine: int | None = None,
        max_impostors: int | None = 10_000_000,
        report_fars: Sequence[float] = (1e-3,),
        random_state: int | None = 0,
    ) -> None:
        self.metric = metric
        self.far = far
        self.impostor_ratio = impostor_ratio
        self.max_genuine = max_genuine
        self.max_impostors = max_impostors
        self.report_fars = report_fars
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "metric",
                "far",
                "impostor_ratio",
                "max_genuine",
                "max_impostors",
                "report_fars",
                "random_state",
            )
        }

    def __repr__(self) -> str:
        return "Verifier(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def fit(self, X: np.ndarray, y: np.ndarray) -> Verifier:
        """Draw genuine/impostor pairs among the rows of ``X`` (labels ``y``) and set the threshold."""
        metric = check_metric(self.metric)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise DataError(f"need (N, D) embeddings and N labels, got {X.shape} and {y.shape}")
        i, j, same = sample_pairs(
            y,
            impostor_ratio=float(self.impostor_ratio),
            max_genuine=self.max_genuine,
            max_impostors=self.max_impostors,
            random_state=self.random_state,
        )
        scores = np.empty(i.size, np.float64)
        step = 1 << 18
        for s in range(0, i.size, step):
            scores[s : s + step] = paired_similarity(X[i[s : s + step]], X[j[s : s + step]], metric)
        self.n_features_in_ = X.shape[1]
        return self.fit_scores(scores, same)

    def fit_scores(self, scores: np.ndarray, same: np.ndarray) -> Verifier:
        """Set the threshold and figures from precomputed pair scores (``same`` True = genuine)."""
        if self.far is not None and not 0.0 <= float(self.far) <= 1.0:
            raise ConfigError(f"Verifier.far must be in [0, 1] or None, got {self.far!r}")
        s = np.asarray(scores, dtype=np.float64).ravel()
        same = np.asarray(same).astype(bool).ravel()
        self.auc_ = metrics.auc(same, s)
        self.eer_, self.eer_threshold_ = metrics.eer(same, s)
        self.tar_at_far_ = {float(f): metrics.tar_at_far(same, s, float(f)) for f in self.report_fars}
        self.threshold_ = (
            self.eer_threshold_ if self.far is None else metrics.threshold_at_far(same, s, float(self.far))
        )
        self.n_genuine_ = int(same.sum())
        self.n_impostor_ = int((~same).sum())
        self.far_at_threshold_ = float((s[~same] >= self.threshold_).mean())
        self.frr_at_threshold_ = float((s[same] < self.threshold_).mean())
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("Verifier is not fitted: call fit(embeddings, labels) first")

    def score_samples(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Similarity of row i of ``A`` with row i of ``B`` (higher = more likely the same person)."""
        A = np.asarray(A, dtype=np.float32)
        B = np.asarray(B, dtype=np.float32)
        if A.shape != B.shape or A.ndim != 2:
            raise DataError(f"paired embeddings must both be (N, D), got {A.shape} and {B.shape}")
        return np.asarray(paired_similarity(A, B, check_metric(self.metric)), dtype=np.float64)

    def decision_function(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Score minus the threshold: >= 0 means 'same person'."""
        self._fitted()
        return self.score_samples(A, B) - self.threshold_

    def predict(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """True where the pair is accepted as the same person."""
        return self.decision_function(A, B) >= 0

    def similarity_matrix(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """(N, M) similarities of every row of ``A`` with every row of ``B``."""
        return np.asarray(
            pairwise_similarity(np.asarray(A, np.float32), np.asarray(B, np.float32), check_metric(self.metric))
        )

    def evaluate(self, A: np.ndarray, B: np.ndarray, same: np.ndarray) -> dict[str, float]:
        """Figures on given pairs: AUC, EER, TAR at each reported FAR, and accuracy/FAR/FRR at ``threshold_``."""
        self._fitted()
        s = self.score_samples(A, B)
        same = np.asarray(same).astype(bool).ravel()
        out = {"pairs": int(s.size), "auc": metrics.auc(same, s), "eer": metrics.eer(same, s)[0]}
        for f in self.report_fars:
            out[f"tar_at_far_{f:g}"] = metrics.tar_at_far(same, s, float(f))
        out["accuracy_at_threshold"] = metrics.accuracy_at(same, s, self.threshold_)
        out["far_at_threshold"] = float((s[~same] >= self.threshold_).mean())
        out["frr_at_threshold"] = float((s[same] < self.threshold_).mean())
        return out

    def report(self) -> dict[str, Any]:
        """The fitted figures as a JSON-ready dict."""
        self._fitted()
        return {
            "metric": self.metric,
            "threshold": self.threshold_,
            "threshold_rule": "eer" if self.far is None else f"far={self.far:g}",
            "auc": self.auc_,
            "eer": self.eer_,
            "eer_threshold": self.eer_threshold_,
            **{f"tar_at_far_{f:g}": v for f, v in self.tar_at_far_.items()},
            "far_at_threshold": self.far_at_threshold_,
            "frr_at_threshold": self.frr_at_threshold_,
            "genuine_pairs": self.n_genuine_,
            "impostor_pairs": self.n_impostor_,
        }
