"""Class representatives per layer (centroids or medoids) of pooled tap features.

The trajectory detector measures, layer by layer, how far an image's pooled features lie
from every class's representative.  Representatives come from the classifier head's
*training* images that the classifier gets right, never from the detector's natural or
source images (an image's distance to itself as medoid would be zero).

API (plain arrays in and out, scikit-learn style):

- ``ClassRepresentatives(kind="medoid" | "centroid", layers=None, device=None)``; ``layers``
  picks and orders the taps (default: every tap given except ``"embedding"``, the network's
  pooled output, which the paper leaves out of the trajectory; name it to include it).
- ``.fit(features, labels, predictions=None) -> self``: ``features`` maps tap name ->
  (N, C_l) array, taps in network order; ``labels`` (N,) class labels; with
  ``predictions`` only the rows with ``predictions == labels`` are used.
- learned state: ``layers_`` (tap names, in order), ``classes_`` (K,) sorted labels,
  ``representatives_`` {tap: (K, C_l) float32}, ``counts_`` (K,) members per class,
  ``medoid_indices_`` {tap: (K,) row index into the fitted arrays} (medoids only).
- ``.save(path)`` / ``ClassRepresentatives.load(path)``: ``<path>.npz`` (arrays, no pickle)
  plus ``<path>.json`` (settings and the npz's sha256), both written atomically.

Rules (see docs/reference-notes): the centroid is the mean of the class's pooled vectors;
the medoid is the class member with the smallest sum of Euclidean distances to the other
members -- Euclidean even when the detector later uses cosine similarity.  Each layer has
its own medoid (it may be a different image at each layer).  Ties go to the first member.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError, NotFittedError
from ..models.base import EMBEDDING
from ..recognition.similarity import pairwise_distance
from ..utils.io import read_json, save_npz, load_npz, sha256_file, write_json

__all__ = ["ClassRepresentatives", "NotFittedError", "KINDS", "check_features", "sidecar_paths"]

KINDS: tuple[str, ...] = ("medoid", "centroid")
_FORMAT = "frad.class-representatives"
_VERSION = 1


def sidecar_paths(path: str | os.PathLike[str], data_suffix: str) -> tuple[Path, Path]:
    """``(<path>.<data_suffix>, <path>.json)``: any suffix of ``path`` is replaced."""
    p = Path(path)
    return p.with_suffix(data_suffix), p.with_suffix(".json")


def check_features(
    features: Mapping[str, ArrayLike], layers: Sequence[str] | None = None, name: str = "features"
) -> tuple[list[str], dict[str, np.ndarray], int]:
    """Validate a {tap: (N, C_l)} mapping; return (layers used, float32 arrays, N)."""
    if not isinstance(features, Mapping) or not features:
        raise DataError(f"{name} must be a non-empty mapping of tap name -> (N, C) array")
    use = list(features) if layers is None else list(layers)
    if not use:
        raise DataError(f"{name}: no taps selected")
    missing = [t for t in use if t not in features]
    if missing:
        raise DataError(f"{name} has no tap(s) {missing}; available: {list(features)}")
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    for t in use:
        a = np.asarray(features[t])
        if a.ndim != 2:
            raise DataError(f"{name}[{t!r}] must be (N, C), got shape {a.shape}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise DataError(f"{name}[{t!r}] has {a.shape[0]} rows, other taps have {n}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"{name}[{t!r}] contains NaN or infinity")
        out[t] = a
    return use, out, int(n or 0)


class ClassRepresentatives:
    """Per-class, per-layer centroids or medoids of pooled tap features."""

    def __init__(
        self,
        kind: str = "medoid",
        *,
        layers: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.kind = kind
        self.layers = layers
        self.device = device

    def __repr__(self) -> str:
        return f"ClassRepresentatives(kind={self.kind!r}, layers={self.layers!r}, device={self.device!r})"

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        features: Mapping[str, ArrayLike],
        labels: ArrayLike,
        predictions: ArrayLike | None = None,
    ) -> ClassRepresentatives:
        """Compute every class's representative at every layer from ``features``.

        ``predictions`` (the classifier's labels for the same rows), when given, restricts
        the fit to correctly classified rows, as the method prescribes.
        """
        if self.kind not in KINDS:
            raise ConfigError(f"ClassRepresentatives: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        layers = self.layers
        if layers is None and isinstance(features, Mapping):
            # the pooled output of the network is not part of a trajectory (only the blocks are)
            layers = [t for t in features if t != EMBEDDING] or None
        layers, feats, n = check_features(features, layers)
        y = np.asarray(labels)
        if y.ndim != 1 or y.size != n:
            raise DataError(f"labels must be (N,) with N = {n} (the features' rows), got shape {y.shape}")
        if y.dtype == object:
            y = y.astype(str)
        keep = np.ones(n, dtype=bool)
        if predictions is not None:
            p = np.asarray(predictions)
            if p.shape != y.shape:
                raise DataError(f"predictions must be (N,) like labels, got shape {p.shape}")
            if p.dtype == object:
                p = p.astype(str)
            keep = np.asarray(p == y, dtype=bool)
        rows = np.flatnonzero(keep)
        if rows.size == 0:
            raise DataError("no correctly classified rows to compute class representatives from")
        classes, inverse, counts = np.unique(y[rows], return_inverse=True, return_counts=True)
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")

        reps: dict[str, np.ndarray] = {}
        medoids: dict[str, np.ndarray] = {}
        # member rows of each class, as indices into the fitted arrays
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        members = [rows[order[bounds[k] : bounds[k + 1]]] for k in range(classes.size)]
        for t in layers:
            x = feats[t]
            if self.kind == "centroid":
                # scatter-add per class in float64, then divide: one pass, no per-class loop
                sums = np.zeros((classes.size, x.shape[1]), dtype=np.float64)
                np.add.at(sums, inverse, x[rows].astype(np.float64))
                reps[t] = (sums / counts[:, None]).astype(np.float32)
            else:
                idx = np.array([m[_medoid_position(x[m], device)] for m in members], dtype=np.int64)
                medoids[t] = idx
                reps[t] = x[idx].copy()

        self.layers_ = layers
        self.classes_ = classes
        self.counts_ = counts.astype(np.int64)
        self.representatives_ = reps
        self.n_samples_fit_ = int(rows.size)
        if self.kind == "medoid":
            self.medoid_indices_ = medoids
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "representatives_"):
            raise NotFittedError("ClassRepresentatives is not fitted: call fit(features, labels) or load(path) first")

    @property
    def n_classes(self) -> int:
        self._check_fitted()
        return int(self.classes_.size)

    def channels(self) -> dict[str, int]:
        """Channels per layer, in layer order."""
        self._check_fitted()
        return {t: int(self.representatives_[t].shape[1]) for t in self.layers_}

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (settings); returns both paths."""
        self._check_fitted()
        npz, js = sidecar_paths(path, ".npz")
        arrays: dict[str, np.ndarray] = {"classes": self.classes_, "counts": self.counts_}
        for i, t in enumerate(self.layers_):
            arrays[f"rep_{i}"] = self.representatives_[t]
            if self.kind == "medoid":
                arrays[f"medoid_index_{i}"] = self.medoid_indices_[t]
        save_npz(npz, **arrays)
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "version": _VERSION,
            "kind": self.kind,
            "layers": list(self.layers_),
            "n_classes": int(self.classes_.size),
            "n_samples_fit": self.n_samples_fit_,
            "npz": npz.name,
            "npz_sha256": sha256_file(npz),
        }
        write_json(js, meta)  # written last: the json marks a complete pair
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> ClassRepresentatives:
        """Read representatives written by :meth:`save` (never unpickles)."""
        npz, js = sidecar_paths(path, ".npz")
        if not js.is_file() or not npz.is_file():
            raise DataError(f"{js} / {npz}: representatives not found (expected the pair written by save)")
        meta = read_json(js)
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise DataError(f"{js}: not a frad class-representatives file (format {_FORMAT!r} expected)")
        if meta.get("version") != _VERSION:
            raise DataError(f"{js}: unsupported version {meta.get('version')!r} (expected {_VERSION})")
        if sha256_file(npz) != meta.get("npz_sha256"):
            raise DataError(f"{npz}: checksum differs from the one recorded in {js.name} (file changed or mismatched)")
        arrays = load_npz(npz)
        self = cls(kind=meta["kind"], layers=meta["layers"], device=device)
        self.layers_ = list(meta["layers"])
        self.classes_ = arrays["classes"]
        self.counts_ = arrays["counts"]
        self.n_samples_fit_ = int(meta.get("n_samples_fit", int(self.counts_.sum())))
        self.representatives_ = {t: arrays[f"rep_{i}"] for i, t in enumerate(self.layers_)}
        if self.kind == "medoid":
            self.medoid_indices_ = {t: arrays[f"medoid_index_{i}"] for i, t in enumerate(self.layers_)}
        return self


def _medoid_position(x: np.ndarray, device: torch.device, block: int = 1024) -> int:
    """Position of the row of ``x`` with the smallest sum of Euclidean distances to the others.

    Distances in float64 (so near-ties are decided by the data, not by round-off), summed
    in row blocks to bound memory for large classes.
    """
    if x.shape[0] <= 2:
        return 0  # one member, or two members at equal summed distance: the first
    t = torch.from_numpy(x).to(device=device, dtype=torch.float64)
    sums = torch.empty(t.shape[0], dtype=torch.float64, device=device)
    for s in range(0, t.shape[0], block):
        sums[s : s + block] = pairwise_distance(t[s : s + block], t, "euclidean").sum(dim=1)
    return int(torch.argmin(sums).item())
