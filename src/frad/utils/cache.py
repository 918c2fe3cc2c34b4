"""Where frad keeps its caches (aligned chips, features, downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """``$FRAD_CACHE_DIR`` or the user's cache folder for frad, joined with ``parts`` (created)."""
    root = os.environ.get("FRAD_CACHE_DIR") or platformdirs.user_cache_dir("frad", appauthor=False)
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
