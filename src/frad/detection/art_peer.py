"""The maintained peer: the Adversarial Robustness Toolbox's ``BinaryActivationDetector``
(``art.defences.detector.evasion``; Metzen et al., "On Detecting Adversarial Perturbations",
ICLR 2017), wrapped in frad's detector interface.  An optional extra: ``pip install 'frad[art]'``.

ART's detector reads the activations of a classifier (an ART ``PyTorchClassifier``) at one
named layer and trains a second ART ``PyTorchClassifier`` (the *detector network*) to tell
natural (class 0) from adversarial (class 1) inputs on them.  Here:

- **the layer**: one tap of the face model, global-average pooled, i.e. exactly the pooled
  tap frad's feature cache holds.  ``layer="auto"`` (the default) chooses it by trying the
  detector at every depth (Metzen et al. compared several attachment depths): every tap's detector is trained on 75% of
  the training rows' source images and the tap with the best macro-AUC on the other 25%
  (mean over attacks of the AUC against the naturals) is kept, then refitted on all
  training rows; the per-tap AUCs are saved with the detector (``layer_selection_``).  No
  benchmark validation or test row takes part in the choice.  ``layer="block14"`` (say)
  fixes it.  (At demo scale on LFW, the last block, chosen a priori in a first version, was
  among the worst layers: benchmarks/RESULTS.md.)
- **the face side**: :func:`art_face_classifier` wraps the frad face model (RGB pixels in
  [0, 255], its own preprocessing inside, ``clip_values=(0, 255)``) in an ART
  ``PyTorchClassifier`` whose layer ``pooled_<tap>`` is the pooled tap; ART's
  ``get_activations`` hooks it.
- **the detector network**: a multi-layer perceptron (``C -> hidden -> 2``, ReLU) in an ART
  ``PyTorchClassifier`` with cross-entropy and Adam, ART's own ``preprocessing=(mean, std)``
  standardising the activations with their training mean and standard deviation, trained by
  ``BinaryActivationDetector.fit`` for ``epochs`` epochs.  (Metzen et al. used a small
  convolutional network on the unpooled map; the feature cache keeps pooled taps, so the
  detector sees the pooled vector.)
- **the score**: the softmax probability of "adversarial" of ART's ``detect`` report
  (``report["predictions"]`` are the detector network's logits); ART's own boolean verdict is
  ``score > 0.5`` (the argmax), frad's is at the operating threshold chosen on validation naturals.

The features path (``fit_features`` / ``score_features``) runs the same
``BinaryActivationDetector`` over an ART classifier whose input *is* the pooled activation
(an identity layer), so the benchmark trains and scores it from the feature cache without a
second pass through the face network; :meth:`ARTActivationDetector.score_samples` runs ART on
pixels through the face model.  Both give the same scores (tests/test_detection_art.py
checks them against ART called directly).  Training is seeded (``random_state``) and
reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ..errors import ConfigError, DataError, FradError
from .base import AdversarialDetector, register_detector
from .representatives import check_features

__all__ = [
    "ARTActivationDetector",
    "ARTMissingError",
    "art_available",
    "art_version",
    "art_face_classifier",
    "detector_network",
    "ART_INSTALL_HINT",
]

ART_INSTALL_HINT = "pip install 'frad[art]' (the adversarial-robustness-toolbox package)"


class ARTMissingError(FradError, ImportError):
    """The Adversarial Robustness Toolbox is not installed (an optional extra)."""


def art_version() -> str | None:
    """The installed ART version, or None when ART cannot be imported."""
    try:
        import art
    except Exception:  # noqa: BLE001 - a broken install is as good as none
        return None
    return str(getattr(art, "__version__", "unknown"))


def art_available() -> bool:
    """Whether ART's ``BinaryActivationDetector`` and ``PyTorchClassifier`` import."""
    try:
        from art.defences.detector.evasion import BinaryActivationDetector  # noqa: F401
        from art.estimators.classification import PyTorchClassifier  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _require_art() -> tuple[Any, Any]:
    try:
        from art.defences.detector.evasion import BinaryActivationDetector
        from art.estimators.classification import PyTorchClassifier
    except Exception as exc:  # noqa: BLE001
        raise ARTMissingError(f"the ART peer detector needs the Adversarial Robustness Toolbox ({exc}); "
                              f"{ART_INSTALL_HINT}") from None
    art_log = logging.getLogger("art")
    if art_log.level == logging.NOTSET:  # ART logs every classifier it wraps at INFO; keep frad's log readable
        art_log.setLevel(logging.WARNING)
    return BinaryActivationDetector, PyTorchClassifier


def _device_type(device: Any) -> str:
    return "gpu" if device is not None and torch.device(device).type == "cuda" else "cpu"


def layer_name(tap: str) -> str:
    """The ART layer name under which the pooled tap ``tap`` is exposed."""
    return f"pooled_{tap}"


class _PooledTap(nn.Module):
    """The face model with its pooled tap as a named child ART can hook; outputs the embedding."""

    def __init__(self, face_model: nn.Module, tap: str) -> None:
        super().__init__()
        self.face = face_model
        self.tap = tap
        self.add_module(layer_name(tap), nn.Identity())

    def forward(self, pixels: Tensor) -> Tensor:
        emb, f = self.face.forward_intermediates(pixels, [self.tap], pool=True)
        getattr(self, layer_name(self.tap))(f[self.tap])
        return emb


class _Activations(nn.Module):
    """Input = the pooled activation itself, passed through a named identity layer (features path)."""

    def __init__(self, tap: str) -> None:
        super().__init__()
        self.tap = tap
        self.add_module(layer_name(tap), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, layer_name(self.tap))(x)


def art_face_classifier(face_model: Any, tap: str, *, device: Any = None) -> Any:
    """An ART ``PyTorchClassifier`` over a frad face model whose layer ``pooled_<tap>`` is the
    global-average-pooled tap; inputs are float RGB pixels in [0, 255] (N, 3, H, W)."""
    _, PyTorchClassifier = _require_art()
    if tap not in face_model.tap_names:
        raise ConfigError(f"ART peer: face model {face_model.info.name!r} has no tap {tap!r}; "
                          f"available: {face_model.tap_names}")
    h, w = face_model.info.input_size
    dev = device if device is not None else next(iter(face_model.parameters())).device
    return PyTorchClassifier(model=_PooledTap(face_model, tap), loss=nn.MSELoss(), input_shape=(3, int(h), int(w)),
                             nb_classes=int(face_model.info.embedding_dim), clip_values=(0.0, 255.0),
                             channels_first=True, device_type=_device_type(dev))


def _activation_classifier(tap: str, channels: int, device: Any) -> Any:
    _, PyTorchClassifier = _require_art()
    return PyTorchClassifier(model=_Activations(tap), loss=nn.MSELoss(), input_shape=(int(channels),),
                             nb_classes=max(int(channels), 2), device_type=_device_type(device))


def detector_network(channels: int, hidden: int, seed: int | None) -> nn.Sequential:
    """The detector network: ``Linear(C, hidden) - ReLU - Linear(hidden, 2)``, initialised from ``seed``."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return nn.Sequential(nn.Linear(int(channels), int(hidden)), nn.ReLU(), nn.Linear(int(hidden), 2))
    return nn.Sequential(nn.Linear(int(channels), int(hidden)), nn.ReLU(), nn.Linear(int(hidden), 2))


def art_detector_classifier(network: nn.Module, channels: int, mean: np.ndarray, std: np.ndarray, *, lr: float,
                            device: Any = None) -> Any:
    """ART's ``PyTorchClassifier`` around the detector network (2 classes, ART standardising the input)."""
    _, PyTorchClassifier = _require_art()
    return PyTorchClassifier(model=network, loss=nn.CrossEntropyLoss(), input_shape=(int(channels),), nb_classes=2,
                             optimizer=torch.optim.Adam(network.parameters(), lr=float(lr)),
                             preprocessing=(np.asarray(mean, np.float32), np.asarray(std, np.float32)),
                             device_type=_device_type(device))


def _softmax1(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.asarray(logits, np.float64), axis=1)[:, 1]


@register_detector
class ARTActivationDetector(AdversarialDetector):
    """ART's ``BinaryActivationDetector`` on one pooled tap of the face model; see the module doc."""

    kind = "art_binary_activation"
    title = "ART BinaryActivationDetector (maintained peer)"

    def __init__(self, *, layer: str | None = "auto", taps: Sequence[str] | None = None, hidden: int = 128,
                 epochs: int = 60, batch_size: int = 64, lr: float = 1e-3, random_state: int | None = 0,
                 selection_size: float = 0.25, device: Any = None) -> None:
        self.layer = layer
        self.taps = taps
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.selection_size = selection_size
        self.device = device

    def _layer(self, available: Sequence[str]) -> str:
        """A fixed layer (``layer=None``: the last block before the embedding)."""
        if self.layer is not None:
            if self.layer not in available:
                raise ConfigError(f"ART peer: layer {self.layer!r} is not among the features' taps {list(available)}")
            return self.layer
        blocks = [t for t in available if t != "embedding"]
        if not blocks:
            raise ConfigError("ART peer: no block tap to read (only the embedding); pass layer='embedding' to use it")
        return blocks[-1]  # the last block before the embedding

    def _build(self, channels: int, mean: np.ndarray, std: np.ndarray) -> None:
        BinaryActivationDetector, _ = _require_art()
        self.channels_ = int(channels)
        self.mean_, self.std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.network_ = detector_network(self.channels_, self.hidden, self.random_state)
        self.art_detector_classifier_ = art_detector_classifier(self.network_, self.channels_, self.mean_, self.std_,
                                                                lr=self.lr, device=self.device)
        self.art_ = BinaryActivationDetector(_activation_classifier(self.layer_, self.channels_, self.device),
                                             self.art_detector_classifier_, layer_name(self.layer_))

    def fit_features(self, features: Mapping[str, ArrayLike], y: ArrayLike, *, labels: ArrayLike | None = None,
                     groups: ArrayLike | None = None, source_ids: ArrayLike | None = None) -> ARTActivationDetector:
        """Train ART's detector on the pooled activations at ``layer`` (y: 1 = adversarial);
        ``layer="auto"`` first chooses the tap on a held-out share of the rows' source images."""
        _require_art()
        available = list(features) if self.taps is None else list(self.taps)
        yy = np.asarray(y).astype(np.int64).ravel()
        if yy.min(initial=0) == yy.max(initial=0) or not set(np.unique(yy)) <= {0, 1}:
            raise DataError("ART peer: needs natural (0) and adversarial (1) rows, and nothing else")
        self.layer_selection_: dict[str, float] | None = None
        if self.layer == "auto":
            self.layer_, self.layer_selection_ = self._select_layer(features, yy, available, groups, source_ids)
        else:
            self.layer_ = self._layer(available)
        return self._fit_layer(features, yy)

    def _select_layer(self, features: Mapping[str, ArrayLike], y: np.ndarray, available: Sequence[str],
                      groups: ArrayLike | None, source_ids: ArrayLike | None) -> tuple[str, dict[str, float]]:
        from .detectors import macro_auc
        from .sampling import split_by_source

        _, feats, n = check_features(features, list(available), "features")
        if y.size != n:
            raise DataError(f"ART peer: {n} feature rows but {y.size} labels")
        src = np.arange(n).astype(str) if source_ids is None else np.asarray(source_ids).astype(str)
        grp = np.where(y == 1, "adversarial", "natural") if groups is None else np.asarray(groups).astype(str)
        rng = np.random.default_rng(None if self.random_state is None else int(self.random_state))
        tr, va = split_by_source(src, y, test_size=float(self.selection_size), random_state=rng)
        if np.unique(y[tr]).size < 2 or np.unique(y[va]).size < 2:
            raise DataError("ART peer: too few rows to choose a layer (both sides of the split need naturals and "
                            "adversarials); pass layer=<tap>")
        aucs: dict[str, float] = {}
        for t in available:
            probe = ARTActivationDetector(layer=t, hidden=self.hidden, epochs=self.epochs, batch_size=self.batch_size,
                                          lr=self.lr, random_state=self.random_state, device=self.device)
            probe.layer_ = t
            probe._fit_layer({t: feats[t][tr]}, y[tr])
            aucs[t] = float(macro_auc(y[va], probe.score_features({t: feats[t][va]}), grp[va]))
        best = max(available, key=lambda t: (aucs[t], -list(available).index(t)))  # ties: the shallower tap
        return best, aucs

    def _fit_layer(self, features: Mapping[str, ArrayLike], yy: np.ndarray) -> ARTActivationDetector:
        _, feats, n = check_features(features, [self.layer_], "features")
        x = np.ascontiguousarray(feats[self.layer_], np.float32)
        if yy.size != n:
            raise DataError(f"ART peer: {n} feature rows but {yy.size} labels")
        sd = x.std(axis=0)
        self._build(x.shape[1], x.mean(axis=0), np.where(sd > 1e-6, sd, 1.0))
        with torch.random.fork_rng(devices=[]):
            if self.random_state is not None:
                torch.manual_seed(int(self.random_state))  # ART's DataLoader shuffles with torch's global RNG
            self.art_.fit(x, np.eye(2, dtype=np.float32)[yy], batch_size=int(self.batch_size),
                          nb_epochs=int(self.epochs))
        self.network_.eval()
        self.taps_ = [self.layer_]
        return self

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """P(adversarial) from ART's ``detect`` on the pooled activations at the layer."""
        feats, n = self._features(features)
        if n == 0:
            return np.zeros(0)
        report, _ = self.art_.detect(np.ascontiguousarray(feats[self.layer_], np.float32), batch_size=256)
        return _softmax1(report["predictions"])

    def art_detector(self, face_model: Any = None) -> Any:
        """ART's ``BinaryActivationDetector`` over the face model itself (pixels in, verdicts out)."""
        BinaryActivationDetector, _ = _require_art()
        self._check_fitted()
        fm = face_model if face_model is not None else self.face_model_
        if fm is None:
            raise ConfigError("ART peer: no face model attached; bind(model) or load(folder, face_model=...) first")
        return BinaryActivationDetector(art_face_classifier(fm, self.layer_), self.art_detector_classifier_,
                                        layer_name(self.layer_))

    def score_samples(self, pixels: Tensor, *, batch_size: int = 32) -> np.ndarray:
        """P(adversarial) of float RGB pixels in [0, 255], through ART over the face model."""
        self._check_fitted()
        if self.face_model_ is None:
            return super().score_samples(pixels, batch_size=batch_size)  # raises the base class's clear error
        if len(pixels) == 0:
            return np.zeros(0)
        x = pixels.detach().cpu().numpy() if isinstance(pixels, Tensor) else np.asarray(pixels)
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataError(f"pixels must be (N, 3, H, W) RGB in [0, 255], got shape {tuple(x.shape)}")
        report, _ = self.art_detector().detect(np.ascontiguousarray(x, np.float32), batch_size=int(batch_size))
        return _softmax1(report["predictions"])

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        settings = {"layer": self.layer_, "channels": self.channels_, "hidden": int(self.hidden),
                    "epochs": int(self.epochs), "batch_size": int(self.batch_size), "lr": float(self.lr),
                    "random_state": self.random_state, "art_version": art_version(),
                    "layer_selection": getattr(self, "layer_selection_", None)}
        tensors = {f"network.{k}": v for k, v in self.network_.state_dict().items()}
        return settings, {"mean": self.mean_, "std": self.std_}, tensors

    @classmethod
    def _from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    tensors: Mapping[str, Tensor], folder: Path) -> ARTActivationDetector:
        _require_art()
        self = cls(layer=str(settings["layer"]), hidden=int(settings["hidden"]), epochs=int(settings["epochs"]),
                   batch_size=int(settings["batch_size"]), lr=float(settings["lr"]),
                   random_state=settings.get("random_state"))
        self.layer_ = str(settings["layer"])
        self.layer_selection_ = settings.get("layer_selection")
        self._build(int(settings["channels"]), arrays["mean"], arrays["std"])
        self.network_.load_state_dict({k[len("network."):]: v for k, v in tensors.items()
                                       if k.startswith("network.")})
        self.network_.eval()
        return self
