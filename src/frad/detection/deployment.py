"""The detectors a run trained, ready to score images: :func:`load_run_detector`.

A run's benchmark stage saves every detector it trained as a folder under
``<run>/detection/benchmark/detectors/<setting>/<name>`` and lists them in
``<run>/detection/benchmark/index.json`` with their validation macro-AUC, operating
threshold and the face model they read (name, fingerprint and the options it was created
with).  Names are ``<setting>/<detector>`` (e.g. ``targeted/fusion``); a bare detector name
means its targeted version when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..kinds import SETTINGS
from ..utils.io import read_json
from .base import AdversarialDetector, load_detector_folder

__all__ = ["load_run_detector", "run_detector_index", "resolve_detector_name", "INDEX"]

INDEX = Path("detection") / "benchmark" / "index.json"


def run_detector_index(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's detector index (a ``DataError`` naming the file when the run has none)."""
    p = Path(run_dir) / INDEX
    if not p.is_file():
        raise DataError(f"{p}: no trained detectors in this run folder (run `frad run` through its benchmark stage)")
    idx = read_json(p)
    if not isinstance(idx, dict) or idx.get("format") != "frad.run-detectors" or not idx.get("detectors"):
        raise DataError(f"{p}: not a frad detector index, or it lists no detectors")
    return idx


def resolve_detector_name(index: dict[str, Any], name: str | None) -> str:
    """``None`` -> the chosen detector; ``"fusion"`` -> ``"targeted/fusion"`` when present."""
    dets = index["detectors"]
    if name is None:
        return str(index.get("chosen") or max(dets, key=lambda k: dets[k]["validation_macro_auc"]))
    if name in dets:
        return name
    for setting in SETTINGS:
        if f"{setting}/{name}" in dets:
            return f"{setting}/{name}"
    raise DataError(f"detector {name!r} is not in this run; available: {', '.join(dets)}")


def load_run_detector(
    run_dir: str | os.PathLike[str], name: str | None = None, face_model: Any = None
) -> AdversarialDetector:
    """The run's detector ``name`` (default: the best by validation macro-AUC), bound to a face model.

    Without ``face_model`` the run's face model is created from the registry with the
    options the run used; a given one must have the fingerprint the detector was trained on.
    """
    idx = run_detector_index(run_dir)
    key = resolve_detector_name(idx, name)
    folder = Path(run_dir) / INDEX.parent / idx["detectors"][key]["folder"]
    if face_model is None:
        from ..models.registry import create_model

        fm = idx.get("face_model") or {}
        if not fm.get("name"):
            raise DataError(f"{Path(run_dir) / INDEX}: does not name the face model; pass face_model=")
        face_model = create_model(fm["name"], **(fm.get("options") or {})).eval()
    det = load_detector_folder(folder, face_model=face_model)
    det.name_ = key  # type: ignore[attr-defined]
    return det
