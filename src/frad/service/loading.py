"""What the service needs from a finished run folder: the face network, the FR system's
templates and thresholds, and the adversarial detector.

The detector is used through :class:`PixelDetector`, a small protocol (pixels in, one score
per image out, higher = more adversarial).  :func:`load_run_detector` is the ONE place that
builds it from a run folder; it reads what ``frad run``'s detector stage wrote today
(``detection/detectors/<setting>/<key>.*`` and ``detection/representatives/<kind>.*``) and
wraps it so that it takes pixels.  When frad.detection grows its own saved pixel-level
detector, this function is what changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..utils.io import load_npz, read_json

__all__ = ["PixelDetector", "RunParts", "load_run_detector", "load_run_parts"]

log = logging.getLogger("frad.serve")


@runtime_checkable
class PixelDetector(Protocol):
    """An adversarial detector over face-model inputs (RGB float pixels in [0, 255])."""

    threshold_: float
    face_model_name: str

    def score_samples(self, pixels: Tensor) -> np.ndarray:
        """(N,) scores for N x 3 x H x W pixels; higher = more adversarial."""
        ...

    def predict(self, pixels: Tensor) -> np.ndarray:
        """(N,) 1 where the score reaches ``threshold_`` (adversarial), else 0."""
        ...


class _TrajectoryPixelDetector:
    """A run's trajectory detector on pixels: taps of the face model -> distances to the class
    representatives -> the MLP/LSTM detector's probability.

    ``score_features`` takes the pooled taps directly, so a caller that has already run the
    network (the service does, for the embedding) does not run it twice.
    """

    def __init__(self, model: Any, reps: Any, detector: Any, metric: str, threshold: float, name: str) -> None:
        self.model = model
        self.reps = reps
        self.detector = detector
        self.metric = metric
        self.threshold_ = float(threshold)
        self.face_model_name = str(model.info.name)
        self.name = name
        self.layers = list(reps.layers_)

    def score_features(self, taps: dict[str, np.ndarray]) -> np.ndarray:
        from ..detection.trajectories import compute_trajectories

        traj = compute_trajectories({t: taps[t] for t in self.layers}, self.reps, self.metric)
        return np.asarray(self.detector.score_samples(traj), dtype=np.float64)

    @torch.no_grad()
    def score_samples(self, pixels: Tensor) -> np.ndarray:
        _, taps = self.model.forward_intermediates(pixels.to(self.model.device), self.layers, pool=True)
        return self.score_features({t: v.float().cpu().numpy() for t, v in taps.items()})

    def predict(self, pixels: Tensor) -> np.ndarray:
        return (self.score_samples(pixels) >= self.threshold_).astype(np.int64)


def load_run_detector(
    run_dir: str | os.PathLike[str], name: str | None = None, face_model: Any = None, *, device: Any = None
) -> PixelDetector:
    """The run's detector as a :class:`PixelDetector`: ``name`` is ``"<setting>/<key>"`` (e.g.
    ``"targeted/lstm-medoid-euclidean"``) or a bare key (targeted setting); None picks the best
    targeted configuration by macro-AUC.  Its threshold is the EER threshold the detector stage
    measured on the detection test split (as a probability)."""
    from ..detection.detectors import load_detector
    from ..detection.representatives import ClassRepresentatives
    from ..evaluation.detection import best_configuration

    run = Path(run_dir)
    res_path = run / "detection" / "results.json"
    if not res_path.is_file():
        raise DataError(f"{res_path}: the run has no detector results (run its 'detectors' stage first)")
    results = read_json(res_path)
    setting, key = "targeted", None
    if name:
        setting, _, key = name.rpartition("/") if "/" in name else ("targeted", "", name)
    dets = results.get("detectors", {}).get(setting)
    if not dets:
        raise ConfigError(f"--detector: the run has no {setting!r} detectors; settings: {list(results.get('detectors', {}))}")
    key = key or best_configuration(results, setting)
    if key not in dets:
        raise ConfigError(f"--detector: unknown detector {key!r}; the run has {', '.join(sorted(dets))}")
    arch, kind, metric = key.split("-", 2)
    det = load_detector(run / "detection" / "detectors" / setting / key, device=device)
    reps = ClassRepresentatives.load(run / "detection" / "representatives" / kind, device=device)
    threshold = float(dets[key].get("pooled", {}).get("eer_threshold_probability", 0.5))
    if face_model is None:
        face_model = load_run_parts(run, device=device).model
    log.info("detector %s/%s (macro-AUC %.3f), threshold %.3f", setting, key, dets[key].get("macro_auc", float("nan")),
             threshold)
    return _TrajectoryPixelDetector(face_model, reps, det, metric, threshold, f"{setting}/{key}")


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
