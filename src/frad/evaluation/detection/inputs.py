"""The detection experiment's inputs: metadata columns, source ids and the split by source,
per-detector parameters and seeds.

Metadata are mappings of column -> (N,) array (a pandas DataFrame works); source ids are
compared as integers when every array holds integers, as text otherwise.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ...detection.sampling import as_id_array, split_by_source
from ...errors import DataError

__all__ = [
    "NATURAL",
    "column",
    "n_rows",
    "subset",
    "detection_test_sources",
    "common_ids",
    "isin",
    "stable_seed",
    "merge_params",
]

#: the group (and attack) name of natural samples in a detector's training rows
NATURAL = "natural"


def column(meta: Mapping[str, Any], name: str, n: int, what: str, default: Any = None) -> np.ndarray:
    """Column ``name`` of ``what``'s metadata as an (n,) array (``default`` everywhere if it is
    absent and a default is given); a missing column or a wrong length is a DataError."""
    if meta is None or not hasattr(meta, "__getitem__"):
        raise DataError(f"{what} metadata must be a mapping of column -> (N,) array")
    if name not in meta:
        if default is None:
            raise DataError(f"{what} metadata has no column {name!r}")
        return np.full(n, default)
    col = np.asarray(meta[name]).ravel()
    if col.size != n:
        raise DataError(f"{what} metadata column {name!r} has {col.size} rows, the {what} features have {n}")
    return col


def n_rows(features: Mapping[str, ArrayLike], what: str) -> int:
    """The number of samples in a mapping of tap name -> (N, C) features."""
    if not isinstance(features, Mapping) or not features:
        raise DataError(f"{what} features must be a non-empty mapping of tap name -> (N, C) array")
    return int(np.asarray(next(iter(features.values()))).shape[0])


def subset(features: Mapping[str, ArrayLike], rows: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """The given rows of the given taps (taps not in ``features`` are left out)."""
    return {t: np.asarray(features[t])[rows] for t in layers if t in features}


def detection_test_sources(
    natural_ids: ArrayLike,
    adversarial_source_ids: ArrayLike,
    *,
    test_size: float = 0.3,
    random_state: int | None = 0,
) -> np.ndarray:
    """The sorted source ids of the test split (natural ids and attack-source ids split separately)."""
    nat, adv = common_ids(
        as_id_array(natural_ids, "natural source ids"), as_id_array(adversarial_source_ids, "adversarial source ids")
    )
    ids = np.concatenate([nat, adv])
    y = np.r_[np.zeros(nat.size, dtype=np.int8), np.ones(adv.size, dtype=np.int8)]
    _, te = split_by_source(ids, y, test_size=test_size, random_state=random_state)
    return np.unique(ids[te])


def common_ids(*arrays: np.ndarray) -> list[np.ndarray]:
    """Id arrays in one comparable dtype: all integer, else all strings."""
    if all(a.dtype.kind in "iu" for a in arrays):
        return [a.astype(np.int64) for a in arrays]
    return [a.astype(str) for a in arrays]


def isin(ids: np.ndarray, test_ids: np.ndarray) -> np.ndarray:
    """Membership of ids in test_ids, comparing as strings unless both are integers."""
    a, b = common_ids(ids, test_ids)
    return np.isin(a, b)


def stable_seed(*parts: object) -> int:
    """A seed from strings and ints that is the same in every process (unlike ``hash``).

    Deliberately not :func:`frad.utils.seeding.stable_int` (SHA-256): the detectors' seeds
    (network initialisation, validation split, bootstrap) have been drawn from this CRC-32
    since the first runs, so switching would change every detector's weights and AUCs and
    invalidate their saved checkpoints.  Kept for those results; use ``stable_int`` elsewhere.
    """
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def merge_params(
    common: Mapping[str, Any] | None,
    per_arch: Mapping[str, Mapping[str, Any]] | None,
    per_setting: Mapping[str, Mapping[str, Any]] | None,
    arch: str,
    setting: str,
) -> dict[str, Any]:
    """A detector's parameters: the common ones, then its architecture's, then its setting's
    (later ones win)."""
    p: dict[str, Any] = dict(common or {})
    p.update((per_arch or {}).get(arch, {}))
    p.update((per_setting or {}).get(setting, {}))
    return p

