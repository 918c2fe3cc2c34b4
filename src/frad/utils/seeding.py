"""Stable seeds: the same integer from the same parts in every process and on every machine
(unlike ``hash``, which Python salts per process)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

__all__ = ["stable_int", "seeded_choice"]

T = TypeVar("T")


def stable_int(*parts: object) -> int:
    """A 64-bit integer determined by ``parts`` alone (their ``str``, joined by a separator
    that cannot occur in ordinary names), for seeding per-item random draws reproducibly."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def seeded_choice(items: Sequence[T], k: int, *parts: object) -> list[T]:
    """``k`` of ``items`` without replacement, in their original order, drawn by a generator
    seeded with :func:`stable_int` of ``parts`` (e.g. the run's seed and what is drawn)."""
    rng = np.random.default_rng(stable_int(*parts))
    return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))]
