"""Which source code produced a result: the git commit of the frad checkout, when there is one.

``results.json`` records it beside ``frad_version`` so that a report comparing runs can say
which code each run's numbers came from (a version number does not change between commits).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

__all__ = ["source_revision"]


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The short commit hash of the checkout frad runs from (``"59d9ef3"``), with ``"+dirty"``
    when tracked files under ``src/`` differ from it; ``None`` for an installed wheel, without
    git, or on any git error (never raises: provenance is best effort)."""
    git = shutil.which("git")
    if git is None:
        return None
    here = Path(__file__).resolve().parents[1]  # the frad package folder
    try:
        top = subprocess.run([git, "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        # frad's own checkout only: a wheel unpacked inside some other repository is not ours
        if not top or (Path(top) / "src" / "frad").resolve() != here:
            return None
        rev = subprocess.run([git, "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run([git, "-C", top, "status", "--porcelain", "--untracked-files=no", "--", "src"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + "+dirty" if dirty else rev) or None
