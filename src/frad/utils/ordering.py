"""Orderings shared by tables and figures."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["natural_key"]


def natural_key(name: str) -> list[Any]:
    """Sort key reading numbers as numbers: 'DF-delta5' before 'DF-delta10', 'eps0.03' before 'eps0.1'."""
    return [(0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(re.split(r"(\d+(?:\.\d+)?)", name))]
