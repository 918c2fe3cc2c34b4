"""Trajectory embeddings: an image's distances, layer by layer, to every class representative.

API (plain arrays in and out):

- ``compute_trajectories(features, representatives, metric="euclidean", batch_size=8192,
  device=None) -> (N, L, K) float32``: ``features`` maps tap name -> (N, C_l) pooled
  features (any extra taps are ignored); ``representatives`` is a fitted
  :class:`~frad.detection.representatives.ClassRepresentatives` or a mapping tap ->
  (K, C_l) array, whose tap order fixes the layer axis.  ``out[i, l, k]`` is
  ``d(features[layer_l][i], representatives[layer_l][k])``.
- Metrics: ``"euclidean"`` -- the plain L2 distance (not normalised); ``"cosine"`` -- the
  raw cosine *similarity* (not ``1 - similarity``), as in the authors' code.  Taps follow a
  ReLU, so similarities lie in [0, 1].  The detector learns the sign, so the two are used
  as they are.
- ``METRIC_LABELS``: the paper's short names ("L2", "cos").

Computed in batches of rows per layer with torch (``cdist`` / one matrix product), on any
device; no per-sample Python loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import DataError
from ..recognition.similarity import check_metric, pairwise_distance, pairwise_similarity
from .representatives import ClassRepresentatives, check_features

__all__ = ["compute_trajectories", "METRIC_LABELS"]

METRIC_LABELS: dict[str, str] = {"euclidean": "L2", "cosine": "cos"}


def _representatives(reps: ClassRepresentatives | Mapping[str, ArrayLike]) -> tuple[list[str], dict[str, np.ndarray]]:
    if isinstance(reps, ClassRepresentatives):
        reps._check_fitted()
        return list(reps.layers_), {t: reps.representatives_[t] for t in reps.layers_}
    layers, arrays, _ = _check_rep_mapping(reps)
    return layers, arrays


def _check_rep_mapping(reps: Mapping[str, ArrayLike]) -> tuple[list[str], dict[str, np.ndarray], int]:
    if not isinstance(reps, Mapping) or not reps:
        raise DataError("representatives must be fitted ClassRepresentatives or a mapping tap -> (K, C) array")
    out: dict[str, np.ndarray] = {}
    k: int | None = None
    for t, a in reps.items():
        arr = np.ascontiguousarray(np.asarray(a), dtype=np.float32)
        if arr.ndim != 2:
            raise DataError(f"representatives[{t!r}] must be (K, C), got shape {arr.shape}")
        if k is not None and arr.shape[0] != k:
            raise DataError(f"representatives[{t!r}] has {arr.shape[0]} classes, other taps have {k}")
        k = arr.shape[0]
        out[t] = arr
    return list(out), out, int(k or 0)


def compute_trajectories(
    features: Mapping[str, ArrayLike],
    representatives: ClassRepresentatives | Mapping[str, ArrayLike],
    metric: str = "euclidean",
    *,
    batch_size: int = 8192,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(N, layers, classes) float32 distances (``euclidean``) or raw cosine similarities (``cosine``)."""
    metric = check_metric(metric)
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    layers, reps = _representatives(representatives)
    _, feats, n = check_features(features, layers)
    for t in layers:
        if feats[t].shape[1] != reps[t].shape[1]:
            raise DataError(
                f"features[{t!r}] has {feats[t].shape[1]} channels but its representatives have {reps[t].shape[1]}"
            )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    k = next(iter(reps.values())).shape[0]
    out = np.empty((n, len(layers), k), dtype=np.float32)
    with torch.no_grad():
        for li, t in enumerate(layers):
            r = torch.from_numpy(reps[t]).to(dev)
            x_all = torch.from_numpy(feats[t])
            for s in range(0, n, int(batch_size)):
                x = x_all[s : s + int(batch_size)].to(dev, non_blocking=True)
                if metric == "euclidean":
                    d = pairwise_distance(x, r, "euclidean")
                else:
                    d = pairwise_similarity(x, r, "cosine")
                out[s : s + x.shape[0], li, :] = d.cpu().numpy()
    return out
