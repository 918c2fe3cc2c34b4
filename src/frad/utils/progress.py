"""Progress bars that stay quiet when asked to (``--quiet``, JSON output, tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "set_progress_enabled"]

T = TypeVar("T")
_enabled: bool | None = None


def set_progress_enabled(enabled: bool | None) -> None:
    """Force progress bars on/off (None = on when stderr is a terminal or FRAD_PROGRESS=1)."""
    global _enabled
    _enabled = enabled


def _is_enabled() -> bool:
    if _enabled is not None:
        return _enabled
    env = os.environ.get("FRAD_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (disabled unless enabled; see :func:`set_progress_enabled`)."""
    kwargs.setdefault("disable", not _is_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, file=sys.stderr, **kwargs)
