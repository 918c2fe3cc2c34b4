"""Training one trajectory detector, or reusing its checkpoint when nothing changed.

A checkpoint is reused only when its fingerprint (a SHA-256 of the training rows, their
labels, groups and source ids, and the detector's parameters) equals the new one, so an
interrupted experiment resumes without retraining finished detectors and a changed input
never reuses a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...detection.detectors import TrajectoryDetector, create_detector, load_detector
from ...errors import FradError
from ...utils.io import json_default
from .configurations import DetectorConfig

__all__ = ["training_fingerprint", "fit_or_resume"]


def training_fingerprint(X: np.ndarray, y: np.ndarray, groups: np.ndarray, src: np.ndarray, params: Mapping[str, Any]) -> str:
    """SHA-256 of the training rows, labels, groups, source ids and parameters (hex)."""
    h = hashlib.sha256()
    for a in (X, y, groups.astype(str), src.astype(str)):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    h.update(json.dumps(params, sort_keys=True, default=json_default).encode())
    return h.hexdigest()



def fit_or_resume(
    config: DetectorConfig,
    setting: str,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    src: np.ndarray,
    checkpoint_dir: str | os.PathLike[str] | None,
) -> TrajectoryDetector:
    """Fit ``config``'s detector on (X, y), or load it from ``checkpoint_dir/<setting>/<key>``
    when that checkpoint was trained on the same data and parameters; a new fit is saved
    there at once (``checkpoint_dir=None``: always fit, save nothing)."""
    if checkpoint_dir is None:
        return create_detector(config.arch, **params).fit(X, y, groups=groups, source_ids=src)
    path = Path(checkpoint_dir) / setting / config.key
    fp = training_fingerprint(X, y, groups, src, {"arch": config.arch, **{k: str(v) for k, v in params.items()}})
    if path.with_suffix(".json").is_file():
        try:
            det = load_detector(path, device=params.get("device"))
            if isinstance(det.metadata_, dict) and det.metadata_.get("fingerprint") == fp:
                return det
        except FradError:
            pass  # damaged or foreign checkpoint: train again and overwrite it
    det = create_detector(config.arch, **params).fit(X, y, groups=groups, source_ids=src)
    det.save(path, metadata={"fingerprint": fp, "setting": setting, "configuration": config.key})
    return det

