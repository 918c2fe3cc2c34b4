"""Balanced sampling and source-grouped splits for training trajectory detectors.

API (plain arrays in, plain arrays out):

- ``group_weights(groups) -> (N,) float64``: every sample's weight ``N / count(its group)``,
  so each attack group and the natural set carry the same total weight (the authors' rule).
- ``balanced_sampler(groups, num_samples=None, generator=None) -> WeightedRandomSampler``:
  PyTorch's weighted sampler with those weights, drawing with replacement; every group is
  drawn equally often in expectation whatever its size.
- ``split_by_source(source_ids, y=None, test_size=0.2, random_state=None) -> (train, test)``:
  index arrays of a split in which all samples of one source id (a source image and every
  adversarial crafted from it; a natural image on its own) fall on the same side.  With
  ``y`` the split is stratified: source ids that carry natural samples (``y == 0``) and
  those that carry only adversarial samples are split separately with the same fraction, so
  both sides hold natural and adversarial samples.  The split depends only on the *set* of
  ids and the seed, not on the order of the rows.

Source ids of natural images and of attack sources must come from one namespace (e.g. image
paths or indices into one image list): equal ids are treated as the same image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.model_selection import GroupShuffleSplit
from torch.utils.data import WeightedRandomSampler

from ..errors import ConfigError, DataError

__all__ = ["group_weights", "balanced_sampler", "split_by_source", "as_id_array"]


def as_id_array(values: ArrayLike | Sequence[object], name: str = "ids") -> np.ndarray:
    """A 1-D array of hashable ids (ints or strings; mixed or object input becomes strings)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == object:
        arr = arr.astype(str)
    return arr


def group_weights(groups: ArrayLike) -> np.ndarray:
    """Per-sample weights ``N / count(group)``: each group's weights sum to N (equal totals)."""
    g = as_id_array(groups, "groups")
    if g.size == 0:
        raise DataError("groups is empty")
    _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    return g.size / counts[inverse].astype(np.float64)


def balanced_sampler(
    groups: ArrayLike, num_samples: int | None = None, generator: torch.Generator | None = None
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` (with replacement) giving every group equal draw probability.

    ``num_samples`` defaults to the number of samples (one epoch).  Pass a seeded
    ``torch.Generator`` for reproducible draws.
    """
    w = group_weights(groups)
    n = w.size if num_samples is None else int(num_samples)
    if n < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    return WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), n, replacement=True, generator=generator)


def _seed(random_state: int | np.random.Generator | None) -> int:
    return int(np.random.default_rng(random_state).integers(2**31 - 1))


def split_by_source(
    source_ids: ArrayLike,
    y: ArrayLike | None = None,
    *,
    test_size: float = 0.2,
    random_state: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (train, test) index arrays so that no source id is on both sides.

    A share ``test_size`` of the unique source ids goes to the test side (scikit-learn's
    ``GroupShuffleSplit``, so ``ceil(test_size * n_ids)`` ids); with ``y`` this is done
    separately for ids carrying natural samples and ids carrying only adversarial ones.
    """
    ids = as_id_array(source_ids, "source_ids")
    if not 0.0 < float(test_size) < 1.0:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    if y is None:
        strata = np.zeros(ids.size, dtype=bool)
    else:
        yy = np.asarray(y).ravel()
        if yy.shape != ids.shape:
            raise DataError(f"y has {yy.size} rows but source_ids has {ids.size}")
        uniq, inv = np.unique(ids, return_inverse=True)
        has_natural = np.zeros(uniq.size, dtype=bool)
        has_natural[inv[yy == 0]] = True
        strata = has_natural[inv]
    seed = _seed(random_state)
    test_mask = np.zeros(ids.size, dtype=bool)
    for k, stratum in enumerate(np.unique(strata)):
        rows = np.flatnonzero(strata == stratum)
        uniq = np.unique(ids[rows])
        what = "natural" if (y is not None and stratum) else ("adversarial" if y is not None else "")
        if uniq.size < 2:
            raise DataError(
                f"cannot split {what + ' ' if what else ''}samples by source: need at least 2 distinct source ids, "
                f"got {uniq.size}"
            )
        # split the sorted unique ids (order of rows does not matter), then map back to rows
        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed + k)
        try:
            _, te = next(gss.split(uniq, groups=uniq))
        except ValueError as exc:  # one side would be empty
            raise DataError(
                f"test_size={test_size} cannot split {uniq.size} {what + ' ' if what else ''}source ids: {exc}"
            ) from None
        test_mask[rows[np.isin(ids[rows], uniq[te])]] = True
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
