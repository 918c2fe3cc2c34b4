"""Adversarial detection from feature-distance trajectories (MLP and LSTM detectors)."""

from .detectors import (
    DETECTORS,
    LSTMDetector,
    MLPDetector,
    TrajectoryDetector,
    create_detector,
    load_detector,
)
from .representatives import ClassRepresentatives, NotFittedError
from .sampling import balanced_sampler, group_weights, split_by_source
from .trajectories import METRIC_LABELS, compute_trajectories

__all__ = [
    "ClassRepresentatives",
    "NotFittedError",
    "compute_trajectories",
    "METRIC_LABELS",
    "TrajectoryDetector",
    "MLPDetector",
    "LSTMDetector",
    "DETECTORS",
    "create_detector",
    "load_detector",
    "group_weights",
    "balanced_sampler",
    "split_by_source",
]
