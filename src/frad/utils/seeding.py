"""Stable seeds: the same integer from the same parts in every process and on every machine
(unlike ``hash``, which Python salts per process)."""

from __future__ import annotations

import hashlib

__all__ = ["stable_int"]


def stable_int(*parts: object) -> int:
    """A 64-bit integer determined by ``parts`` alone (their ``str``, joined by a separator
    that cannot occur in ordinary names), for seeding per-item random draws reproducibly."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")
