"""The paper's detector as one object: representatives + distance + trajectory network.

``TrajectoryFaceDetector(arch="lstm" | "mlp", representative="medoid" | "centroid",
metric="euclidean" | "cosine", representatives=None, **network_params)``:

- ``fit_reference(features, labels, predictions)`` fits the class representatives on the
  head-training images (skipped when fitted ``representatives`` were given: a run fits
  them once and shares them between its detectors);
- ``fit_features(features, y, groups=..., source_ids=...)`` computes the (layers x classes)
  trajectories and trains the MLP / LSTM of :mod:`frad.detection.detectors` on them;
- ``score_features(features)`` is the network's probability of "adversarial" in [0, 1].

Saved as ``representatives.{npz,json}`` and ``network.{pt,json}`` inside the detector
folder, both covered by the folder's checksums.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor

from ..errors import ConfigError, NotFittedError
from .base import AdversarialDetector, register_detector
from .detectors import TrajectoryDetector, create_detector, load_detector
from .representatives import KINDS, ClassRepresentatives
from .trajectories import METRIC_LABELS, compute_trajectories

__all__ = ["TrajectoryFaceDetector"]


@register_detector
class TrajectoryFaceDetector(AdversarialDetector):
    """Distances to class representatives, layer by layer, read by an MLP or an LSTM."""

    kind = "trajectory"
    title = "trajectory (Massoli et al.)"

    def __init__(
        self,
        arch: str = "lstm",
        representative: str = "medoid",
        metric: str = "euclidean",
        *,
        representatives: ClassRepresentatives | None = None,
        network: TrajectoryDetector | None = None,
        device: Any = None,
        **network_params: Any,
    ) -> None:
        self.arch = arch
        self.representative = representative
        self.metric = metric
        self.representatives = representatives
        self.network = network
        self.device = device
        self.network_params = network_params

    def _check(self) -> None:
        if self.arch not in ("lstm", "mlp"):
            raise ConfigError(f"TrajectoryFaceDetector: arch must be 'lstm' or 'mlp', got {self.arch!r}")
        if self.representative not in KINDS:
            raise ConfigError(f"TrajectoryFaceDetector: representative must be one of {KINDS}, got {self.representative!r}")
        if self.metric not in METRIC_LABELS:
            raise ConfigError(f"TrajectoryFaceDetector: metric must be one of {list(METRIC_LABELS)}, got {self.metric!r}")

    def fit_reference(
        self, features: Mapping[str, ArrayLike], labels: ArrayLike, predictions: ArrayLike | None = None
    ) -> TrajectoryFaceDetector:
        self._check()
        if self.representatives is None or not hasattr(self.representatives, "representatives_"):
            self.representatives = ClassRepresentatives(self.representative, device=self.device).fit(
                features, labels, predictions
            )
        return self

    def _reps(self) -> ClassRepresentatives:
        if self.representatives is None or not hasattr(self.representatives, "representatives_"):
            raise NotFittedError("TrajectoryFaceDetector: representatives are not fitted (call fit_reference first)")
        if self.representatives.kind != self.representative:
            raise ConfigError(
                f"TrajectoryFaceDetector: representative={self.representative!r} but the representatives given "
                f"are {self.representatives.kind!r}"
            )
        return self.representatives

    def trajectories(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N, layers, classes) trajectories of pooled features."""
        return compute_trajectories(features, self._reps(), self.metric, device=self.device)

    def fit_features(
        self,
        features: Mapping[str, ArrayLike],
        y: ArrayLike,
        *,
        labels: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        source_ids: ArrayLike | None = None,
    ) -> TrajectoryFaceDetector:
        self._check()
        reps = self._reps()
        X = self.trajectories(features)
        if self.network is None or not hasattr(self.network, "net_"):
            params = dict(self.network_params)
            if self.device is not None:
                params.setdefault("device", self.device)
            self.network = create_detector(self.arch, **params).fit(X, y, groups=groups, source_ids=source_ids)
        self.taps_ = list(reps.layers_)
        return self

    def use_network(self, network: TrajectoryDetector) -> TrajectoryFaceDetector:
        """Adopt an already trained network (e.g. the run's detector checkpoint) instead of training one."""
        self._check()
        reps = self._reps()
        if not hasattr(network, "net_"):
            raise NotFittedError("use_network: the network is not trained")
        if (network.n_layers_, network.n_classes_) != (len(reps.layers_), reps.n_classes):
            raise ConfigError(
                f"use_network: the network reads ({network.n_layers_}, {network.n_classes_}) trajectories, the "
                f"representatives give ({len(reps.layers_)}, {reps.n_classes})"
            )
        self.network = network
        self.taps_ = list(reps.layers_)
        return self

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        feats, _ = self._features(features)
        return self.network.score_samples(self.trajectories(feats))  # type: ignore[union-attr]

    def decision_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """The network's logit (same order as the probability, without saturation)."""
        feats, _ = self._features(features)
        return self.network.decision_function(self.trajectories(feats))  # type: ignore[union-attr]

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:
        return {"arch": self.arch, "representative": self.representative, "metric": self.metric}, {}, {}

    def _write_extra(self, folder: Path) -> list[str]:
        self._reps().save(folder / "representatives")
        self.network.save(folder / "network")  # type: ignore[union-attr]
        return ["representatives.npz", "representatives.json", "network.pt", "network.json"]

    @classmethod
    def _from_state(
        cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], tensors: Mapping[str, Tensor], folder: Path
    ) -> TrajectoryFaceDetector:
        reps = ClassRepresentatives.load(folder / "representatives")
        net = load_detector(folder / "network")
        self = cls(settings["arch"], settings["representative"], settings["metric"], representatives=reps, network=net)
        self._check()
        return self
