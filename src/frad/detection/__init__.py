"""Adversarial detection: the paper's trajectory detectors, the field's baselines and frad's own.

Every detector is an :class:`AdversarialDetector`: ``fit_features`` / ``score_features`` over
pooled taps, ``score_samples(pixels)`` / ``predict(pixels)`` on RGB pixels in [0, 255],
``threshold_``, ``face_model_name``, and ``save(folder)`` / ``load(folder, face_model=...)``.
"""

from .art_peer import ARTActivationDetector, art_available
from .base import DETECTOR_KINDS, AdversarialDetector, load_detector_folder, threshold_at_fpr
from .deployment import load_run_detector, run_detector_index
from .detectors import (
    DETECTORS,
    LSTMDetector,
    MLPDetector,
    TrajectoryDetector,
    create_detector,
    load_detector,
)
from .fusion import FusionDetector
from .knn import DeepKNNDetector
from .lid import LIDDetector
from .mahalanobis import MahalanobisDetector
from .representatives import ClassRepresentatives, NotFittedError
from .sampling import balanced_sampler, group_weights, split_by_source
from .trajectories import METRIC_LABELS, compute_trajectories
from .trajectory import TrajectoryFaceDetector

__all__ = [
    "AdversarialDetector",
    "TrajectoryFaceDetector",
    "MahalanobisDetector",
    "LIDDetector",
    "DeepKNNDetector",
    "FusionDetector",
    "ARTActivationDetector",
    "art_available",
    "DETECTOR_KINDS",
    "load_detector_folder",
    "load_run_detector",
    "run_detector_index",
    "threshold_at_fpr",
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
