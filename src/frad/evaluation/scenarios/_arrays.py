"""Checks and small conversions shared by the scenario modules (not public)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ...errors import ConfigError, DataError
from ...kinds import SETTINGS, Setting


def settings_array(values: ArrayLike, n: int, what: str) -> np.ndarray:
    """(n,) setting names from names or booleans (True = targeted), checked."""
    a = np.asarray(values).ravel()
    if a.size != n:
        raise DataError(f"{what} has {a.size} entries, expected {n}")
    if a.dtype == bool:
        return np.where(a, Setting.TARGETED, Setting.UNTARGETED)
    a = a.astype(str)
    bad = sorted(set(a.tolist()) - set(SETTINGS))
    if bad:
        raise DataError(f"{what} must be 'targeted' / 'untargeted' (or booleans), got {bad}")
    return a


def finite_floats(values: ArrayLike, what: str) -> np.ndarray:
    """A flat float64 array without NaN or infinity."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinity")
    return a


def pct(count: int | float, total: int | float) -> float | None:
    """``count`` as a percentage of ``total`` (None when the total is 0)."""
    return None if total == 0 else 100.0 * float(count) / float(total)


def check_embeddings(x: ArrayLike, what: str) -> np.ndarray:
    """(N, D) finite float32 embeddings."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise DataError(f"{what} must be (N, D) embeddings, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinity")
    return a



def histogram_range(bins: int, value_range: tuple[float, float] | None, values: np.ndarray,
                    empty: str = "no values to summarise") -> tuple[float, float]:
    """(low, high) of a histogram with ``bins`` bins: ``value_range`` if given (checked), else
    the range of ``values`` (widened by 0.5 on each side when all values are equal)."""
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must be (low, high) with low < high, got {value_range}")
        return lo, hi
    if values.size == 0:
        raise DataError(empty)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi
