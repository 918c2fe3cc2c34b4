"""The trajectory detectors' configurations: {LSTM, MLP} x {medoid, centroid} x {L2, cosine}.

``DetectorConfig`` is one of them, with a file- and JSON-friendly key
(``"lstm-medoid-euclidean"``) and the paper's label (``"LSTM + M + L2"``);
``PAPER_CONFIGURATIONS`` are the eight in the paper's table order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...detection.representatives import KINDS
from ...detection.trajectories import METRIC_LABELS
from ...errors import ConfigError

__all__ = ["ARCHS", "DetectorConfig", "PAPER_CONFIGURATIONS"]

ARCHS: tuple[str, ...] = ("lstm", "mlp")
_REP_LETTER = {"medoid": "M", "centroid": "C"}


@dataclass(frozen=True)
class DetectorConfig:
    """One detector configuration: architecture, class representative, trajectory metric."""

    arch: str
    representative: str
    metric: str

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"configuration arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.representative not in KINDS:
            raise ConfigError(
                f"configuration representative must be one of {', '.join(KINDS)}, got {self.representative!r}"
            )
        if self.metric not in METRIC_LABELS:
            raise ConfigError(f"configuration metric must be one of {', '.join(METRIC_LABELS)}, got {self.metric!r}")

    @property
    def key(self) -> str:
        """``"lstm-medoid-euclidean"``: file- and JSON-friendly."""
        return f"{self.arch}-{self.representative}-{self.metric}"

    @property
    def label(self) -> str:
        """The paper's label, e.g. ``"LSTM + M + L2"``."""
        return f"{self.arch.upper()} + {_REP_LETTER[self.representative]} + {METRIC_LABELS[self.metric]}"

    @classmethod
    def parse(cls, value: DetectorConfig | str) -> DetectorConfig:
        """Accept a config or a key such as ``"mlp-centroid-cosine"``."""
        if isinstance(value, DetectorConfig):
            return value
        parts = str(value).split("-")
        if len(parts) != 3:
            raise ConfigError(f"configuration must look like 'lstm-medoid-euclidean', got {value!r}")
        return cls(*parts)

    def as_dict(self) -> dict[str, str]:
        """The configuration as it is written into ``results.json``."""
        return {"key": self.key, "label": self.label, "arch": self.arch, "representative": self.representative,
                "metric": self.metric}


PAPER_CONFIGURATIONS: tuple[DetectorConfig, ...] = tuple(
    DetectorConfig(a, r, m) for a in ARCHS for m in ("euclidean", "cosine") for r in ("medoid", "centroid")
)
