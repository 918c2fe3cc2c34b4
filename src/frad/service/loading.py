"""What the service needs from a finished run folder besides its detector (which
:func:`frad.detection.load_run_detector` loads): the face network, and the FR system's
templates and thresholds."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..utils.io import load_npz, read_json

__all__ = ["RunParts", "load_run_parts"]

log = logging.getLogger("frad.serve")


@dataclass
class RunParts:
    """The FR system of a run: face network, templates with names, metrics and thresholds."""

    run_dir: Path
    model: Any
    metric: str  # identification metric (templates)
    verification_metric: str
    verification_threshold: float
    template_names: list[str]
    templates: np.ndarray  # (K, D) centroids of head-training embeddings
    alignment: dict[str, Any] | None  # align_images keywords, None when the model takes whole images
    input_size: tuple[int, int]


def load_run_parts(run_dir: str | os.PathLike[str], *, device: Any = None) -> RunParts:
    """Read a finished run folder's FR system (the face model is built from its config)."""
    from ..data.alignment import alignment_for
    from ..data.split import read_split
    from ..models.registry import create_model
    from ..pipeline.run import open_run_config

    run = Path(run_dir)
    cfg = open_run_config(run)
    m = cfg.model
    kwargs = dict(m.options)
    if m.weights is not None:
        kwargs["weights"] = m.weights
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = create_model(m.name, **kwargs).to(dev).eval()
    model.requires_grad_(False)
    tpl_path = run / "recognition" / "templates.npz"
    ver_path = run / "recognition" / "verification.json"
    for p in (tpl_path, ver_path):
        if not p.is_file():
            raise DataError(f"{p}: missing; run the 'recognition' stage of this run first")
    z = load_npz(tpl_path)
    split = read_split(run)
    names = [str(split.classes[int(c)]) for c in np.asarray(z["classes"]).ravel()]
    ver = read_json(ver_path)
    return RunParts(
        run_dir=run, model=model, metric=cfg.recognition.metric or model.info.metric,
        verification_metric=str(ver.get("metric", cfg.recognition.verification_metric)),
        verification_threshold=float(ver["threshold"]), template_names=names,
        templates=np.asarray(z["templates"], np.float32),
        alignment=alignment_for(model.info.alignment, model.info.input_size),
        input_size=tuple(model.info.input_size),  # type: ignore[arg-type]
    )
