"""frad: adversarial attacks on face recognition systems, and their detection.

Implements and extends Massoli et al., "Detection of Face Recognition Adversarial Attacks"
(CVIU 2021): face networks with taps after every residual block, classifier and
deep-features attacks, identification and verification, and trajectory-based detectors.

The public API lives here (``frad.create_model``, ``frad.BIM``, ``frad.LSTMDetector``,
``frad.run`` ...).  Names are imported on first use, so ``import frad`` stays cheap and
does not load torch until something needs it.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("frad")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> the module that defines it
_API: dict[str, str] = {
    # face networks
    "create_model": "frad.models", "list_models": "frad.models", "register_model": "frad.models",
    "tap_model": "frad.models", "FaceModel": "frad.models", "Preprocessing": "frad.models",
    "to_pixels": "frad.models.base",
    # data
    "load_identity_folders": "frad.data.folders", "make_synthetic_faces": "frad.data.synthetic",
    "extract_features": "frad.data.features",
    # the FR system
    "HeadTrainer": "frad.recognition.head_training", "TemplateIdentifier": "frad.recognition.identification",
    "Verifier": "frad.recognition.verification",
    # attacks and their criteria
    "FGSM": "frad.attacks", "BIM": "frad.attacks", "MIFGSM": "frad.attacks", "L2MIFGSM": "frad.attacks",
    "CarliniWagnerL2": "frad.attacks", "LBFGS": "frad.attacks", "DeepFeaturesAttack": "frad.attacks",
    "Misclassification": "frad.attacks", "TargetedMisclassification": "frad.attacks",
    "create_attack": "frad.attacks", "list_attacks": "frad.attacks",
    # detectors
    "ClassRepresentatives": "frad.detection", "compute_trajectories": "frad.detection",
    "MLPDetector": "frad.detection", "LSTMDetector": "frad.detection", "load_detector": "frad.detection",
    # whole experiments
    "load_config": "frad.pipeline.config", "run": "frad.pipeline.run",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'frad' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .attacks import (BIM, FGSM, L2MIFGSM, LBFGS, MIFGSM, CarliniWagnerL2, DeepFeaturesAttack,
                          Misclassification, TargetedMisclassification, create_attack, list_attacks)
    from .data.features import extract_features
    from .data.folders import load_identity_folders
    from .data.synthetic import make_synthetic_faces
    from .detection import ClassRepresentatives, LSTMDetector, MLPDetector, compute_trajectories, load_detector
    from .models import FaceModel, Preprocessing, create_model, list_models, register_model, tap_model
    from .models.base import to_pixels
    from .pipeline.config import load_config
    from .pipeline.run import run
    from .recognition.head_training import HeadTrainer
    from .recognition.identification import TemplateIdentifier
    from .recognition.verification import Verifier
