"""Pairwise distances and similarities between embeddings, for NumPy arrays and torch tensors.

Used by verification (pairs), identification (probes vs templates), the deep-features
attack's kNN guidance and the detector's trajectories, so all agree on the definitions.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["Metric", "METRICS", "check_metric", "pairwise_distance", "pairwise_similarity", "paired_similarity"]

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")
ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def check_metric(metric: str) -> Metric:
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric  # type: ignore[return-value]


def _as_tensor(x: np.ndarray | Tensor) -> tuple[Tensor, bool]:
    if isinstance(x, Tensor):
        return x, False
    return torch.from_numpy(np.ascontiguousarray(x)), True


def _back(t: Tensor, was_numpy: bool) -> np.ndarray | Tensor:
    return t.numpy() if was_numpy else t


def pairwise_distance(a: ArrayT, b: ArrayT, metric: Metric = "euclidean") -> ArrayT:
    """(N, M) distances: Euclidean, or cosine distance ``1 - cos``."""
    check_metric(metric)
    ta, na = _as_tensor(a)
    tb, _ = _as_tensor(b)
    if metric == "euclidean":
        # cdist with the matmul path is fast; clamp guards tiny negative round-off
        d = torch.cdist(ta, tb, compute_mode="use_mm_for_euclid_dist_if_necessary").clamp_min(0)
    else:
        d = 1.0 - _cos(ta, tb)
    return _back(d, na)  # type: ignore[return-value]


def pairwise_similarity(a: ArrayT, b: ArrayT, metric: Metric = "cosine") -> ArrayT:
    """(N, M) similarities, higher = more alike: cosine similarity, or negative Euclidean distance."""
    check_metric(metric)
    ta, na = _as_tensor(a)
    tb, _ = _as_tensor(b)
    s = _cos(ta, tb) if metric == "cosine" else -torch.cdist(ta, tb).clamp_min(0)
    return _back(s, na)  # type: ignore[return-value]


def paired_similarity(a: ArrayT, b: ArrayT, metric: Metric = "cosine") -> ArrayT:
    """(N,) similarity of row i of ``a`` with row i of ``b`` (higher = more alike)."""
    check_metric(metric)
    ta, na = _as_tensor(a)
    tb, _ = _as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"paired inputs differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if metric == "cosine":
        s = torch.nn.functional.cosine_similarity(ta, tb, dim=-1, eps=1e-12)
    else:
        s = -torch.linalg.vector_norm(ta - tb, dim=-1)
    return _back(s, na)  # type: ignore[return-value]


def _cos(a: Tensor, b: Tensor) -> Tensor:
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return an @ bn.transpose(-1, -2)
