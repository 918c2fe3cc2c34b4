"""Experiment configuration: typed sections loaded strictly from YAML.

Every setting of ``frad run`` lives in one of the dataclasses below; ``docs/configuration.md``
documents each one (a test keeps the two in step).  Loading checks every key and value
before any work starts: an unknown key, a wrong type or an impossible value raises one
:class:`~frad.errors.ConfigError` naming the field (``config.yaml: split.n_natural: ...``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..kinds import SETTINGS, AttackKind, Setting
from ..utils.executors import ExecutorSpec

__all__ = [
    "ExperimentConfig",
    "DataConfig",
    "SyntheticConfig",
    "ModelConfig",
    "SplitConfig",
    "ClassifierConfig",
    "RecognitionConfig",
    "AttacksConfig",
    "DeepFeaturesConfig",
    "DetectionConfig",
    "ScenariosConfig",
    "BenchmarkConfig",
    "ReportConfig",
    "ChecksConfig",
    "TransferConfig",
    "SecurityConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "section_hash",
]


@dataclass
class SyntheticConfig:
    identities: int = 20
    images_per_identity: int = 16
    size: int = 150

    def check(self, where: str) -> None:
        _at_least(self.identities, 2, f"{where}.identities")
        _at_least(self.images_per_identity, 1, f"{where}.images_per_identity")
        _at_least(self.size, 32, f"{where}.size")


@dataclass
class DataConfig:
    source: Literal["lfw", "folder", "synthetic"] = "lfw"
    path: str | None = None
    min_images: int | None = None
    max_identities: int | None = None
    max_images_per_identity: int | None = None
    detector: Literal["hog", "hog+cnn"] = "hog+cnn"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def check(self, where: str) -> None:
        if self.source == "folder" and not self.path:
            raise ConfigError(f"{where}.path: required when {where}.source is 'folder'")
        for name in ("min_images", "max_identities", "max_images_per_identity"):
            v = getattr(self, name)
            if v is not None:
                _at_least(v, 1 if name != "max_identities" else 2, f"{where}.{name}")
        self.synthetic.check(f"{where}.synthetic")


@dataclass
class ModelConfig:
    name: str = "dlib_resnet_v1"
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    # speed only: each pass equal to float tolerance, so repr=False keeps them out of the features
    # stage's fingerprint (iterative attacks amplify the rounding: see speedups_off_for)
    memory_format: Literal["channels_last", "contiguous"] | None = field(default=None, repr=False)
    fused: bool | None = field(default=None, repr=False)  # the model's cheaper equivalent graph (speed only)
    # attacks run with the two settings above off, so that their adversarials do not depend on
    # them: by default the two whose success turns on float rounding (speed only: repr=False)
    speedups_off_for: list[str] = field(default_factory=lambda: ["cw_l2", "deep_features"], repr=False)

    def check(self, where: str) -> None:
        from ..attacks.registry import known_attacks
        from ..models.registry import list_models

        if self.name not in list_models():
            raise ConfigError(f"{where}.name: unknown face model {self.name!r}; known: {', '.join(list_models())}")
        _at_least(self.batch_size, 1, f"{where}.batch_size")
        known_attacks(self.speedups_off_for, f"{where}.speedups_off_for")


@dataclass
class SplitConfig:
    n_natural: int = 10
    n_source: int = 10
    head_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    min_head_images: int = 3

    @property
    def images_needed(self) -> int:
        return self.n_natural + self.n_source + self.min_head_images

    def check(self, where: str) -> None:
        _at_least(self.n_natural, 1, f"{where}.n_natural")
        _at_least(self.n_source, 1, f"{where}.n_source")
        _at_least(self.min_head_images, 3, f"{where}.min_head_images")
        if len(self.head_fractions) != 3 or any(f < 0 for f in self.head_fractions) or self.head_fractions[0] <= 0:
            raise ConfigError(f"{where}.head_fractions: three fractions (train, val, test), train > 0; got {self.head_fractions}")


@dataclass
class ClassifierConfig:
    lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 256
    max_epochs: int = 1000
    dropout: float = 0.5
    standardize: bool = True
    lr_patience: int = 5
    early_stopping: int = 100

    def check(self, where: str) -> None:
        _positive(self.lr, f"{where}.lr")
        _in_range(self.momentum, 0.0, 1.0, f"{where}.momentum", high_open=True)
        _in_range(self.dropout, 0.0, 1.0, f"{where}.dropout", high_open=True)
        _at_least(self.batch_size, 1, f"{where}.batch_size")
        _at_least(self.max_epochs, 1, f"{where}.max_epochs")
        _at_least(self.lr_patience, 1, f"{where}.lr_patience")
        _at_least(self.early_stopping, 1, f"{where}.early_stopping")


@dataclass
class RecognitionConfig:
    metric: Literal["euclidean", "cosine"] | None = None
    method: Literal["template", "knn"] = "template"
    n_neighbors: int = 1
    verification_metric: Literal["euclidean", "cosine"] = "cosine"
    impostor_ratio: float = 10.0
    far: float | None = None
    report_far: float = 1e-3

    def check(self, where: str) -> None:
        _at_least(self.n_neighbors, 1, f"{where}.n_neighbors")
        _positive(self.impostor_ratio, f"{where}.impostor_ratio")
        if self.far is not None:
            _in_range(self.far, 0.0, 1.0, f"{where}.far", low_open=True)
        _in_range(self.report_far, 0.0, 1.0, f"{where}.report_far", low_open=True)


@dataclass
class AttacksConfig:
    shard_size: int = 32
    batch_size: int = 32
    quantise: bool = True
    attacks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, where: str) -> None:
        _at_least(self.shard_size, 1, f"{where}.shard_size")
        _at_least(self.batch_size, 1, f"{where}.batch_size")
        if not self.attacks:
            raise ConfigError(f"{where}.attacks: list at least one classifier attack")
        run = self.run_config(seed=0, where=where)
        bad = [a.name for a in run.attacks if a.kind is AttackKind.DEEP_FEATURES]
        if bad:
            raise ConfigError(f"{where}.attacks: deep-features attacks belong in the deep_features section ({bad[0]})")

    def run_config(self, seed: int, where: str = "attacks") -> Any:
        from ..attacks.grid import RunConfig

        data = {"seed": seed, "shard_size": self.shard_size, "batch_size": self.batch_size,
                "quantise": self.quantise, "attacks": self.attacks}
        try:
            return RunConfig.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {str(exc).removeprefix('run config: ')}") from None


@dataclass
class DeepFeaturesConfig:
    enabled: bool = True
    deltas: list[float] = field(default_factory=lambda: [5.0, 7.0, 10.0])
    settings: list[Setting] = field(default_factory=lambda: list(SETTINGS))
    max_iter: int = 700
    k: int = 1
    tap: str | None = None
    sources: Literal["test", "all"] = "test"
    max_sources: int | None = None
    workers: int | None = None
    shard_size: int = 16

    def check(self, where: str) -> None:
        if not self.deltas:
            raise ConfigError(f"{where}.deltas: list at least one delta (grey levels)")
        for d in self.deltas:
            _positive(d, f"{where}.deltas")
        if not self.settings or len(set(self.settings)) != len(self.settings):
            raise ConfigError(f"{where}.settings: a non-empty list of distinct 'targeted' / 'untargeted'")
        _at_least(self.max_iter, 1, f"{where}.max_iter")
        _at_least(self.k, 1, f"{where}.k")
        _at_least(self.shard_size, 1, f"{where}.shard_size")
        if self.max_sources is not None:
            _at_least(self.max_sources, 1, f"{where}.max_sources")
        if self.workers is not None:
            _at_least(self.workers, 1, f"{where}.workers")


@dataclass
class DetectionConfig:
    configurations: list[str] = field(
        default_factory=lambda: [
            f"{a}-{r}-{m}" for a in ("lstm", "mlp") for r in ("medoid", "centroid") for m in ("euclidean", "cosine")
        ]
    )
    settings: list[Setting] = field(default_factory=lambda: list(SETTINGS))
    test_size: float = 0.3
    n_bootstrap: int = 1000
    detector: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 150, "batch_size": 256, "lr": 1e-3})
    arch: dict[str, dict[str, Any]] = field(default_factory=lambda: {"lstm": {"bidirectional": True}})
    setting: dict[Setting, dict[str, Any]] = field(default_factory=dict)

    def check(self, where: str) -> None:
        from ..evaluation.detection import DetectorConfig

        if not self.configurations:
            raise ConfigError(f"{where}.configurations: list at least one detector configuration")
        for c in self.configurations:
            try:
                DetectorConfig.parse(c)
            except ConfigError as exc:
                raise ConfigError(f"{where}.configurations: {exc}") from None
        if not self.settings or len(set(self.settings)) != len(self.settings):
            raise ConfigError(f"{where}.settings: a non-empty list of distinct 'targeted' / 'untargeted'")
        _in_range(self.test_size, 0.0, 1.0, f"{where}.test_size", low_open=True, high_open=True)
        _at_least(self.n_bootstrap, 0, f"{where}.n_bootstrap")
        for k in self.arch:
            if k not in ("lstm", "mlp"):
                raise ConfigError(f"{where}.arch: keys must be 'lstm' or 'mlp', got {k!r}")
        for k in self.setting:
            if k not in ("targeted", "untargeted"):
                raise ConfigError(f"{where}.setting: keys must be 'targeted' or 'untargeted', got {k!r}")
        from ..detection.detectors import create_detector

        for arch in ("lstm", "mlp"):
            for s in self.settings:
                params = {**self.detector, **self.arch.get(arch, {}), **self.setting.get(s, {})}
                try:
                    create_detector(arch, **params)._check_params()
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{where}.detector: {exc}") from None


@dataclass
class BenchmarkConfig:
    """The detector benchmark (frad's detectors beside the baselines): see frad.evaluation.benchmark."""

    enabled: bool = True
    detectors: list[str] | None = None
    validation_size: float = 0.2
    fpr: float = 0.05
    uint8: bool = True

    def check(self, where: str) -> None:
        from ..evaluation.benchmark import benchmark_names

        if self.detectors is not None:
            try:
                benchmark_names(self.detectors)
            except ConfigError as exc:
                raise ConfigError(f"{where}.detectors: {exc}") from None
        _in_range(self.validation_size, 0.0, 1.0, f"{where}.validation_size", low_open=True, high_open=True)
        _in_range(self.fpr, 0.0, 1.0, f"{where}.fpr", low_open=True, high_open=True)


@dataclass
class ScenariosConfig:
    distance_metric: Literal["euclidean", "cosine"] = "euclidean"
    bins: int = 40

    def check(self, where: str) -> None:
        _at_least(self.bins, 5, f"{where}.bins")


@dataclass
class ChecksConfig:
    max_face_fallback: float = 0.1
    min_verification_auc: float = 0.75

    def check(self, where: str) -> None:
        _in_range(self.max_face_fallback, 0.0, 1.0, f"{where}.max_face_fallback")
        _in_range(self.min_verification_auc, 0.0, 1.0, f"{where}.min_verification_auc")


@dataclass
class ReportConfig:
    title: str | None = None
    demo: bool = False
    note: str | None = None
    examples: int = 4
    #: other run folders shown beside this run (frad.pipeline.peers); repr=False keeps the setting out of
    #: the scenarios stage's fingerprint, the report stage adds it to its own when it is set
    compare_with: list[str] = field(default_factory=list, repr=False)

    def check(self, where: str) -> None:
        _at_least(self.examples, 0, f"{where}.examples")
        for i, p in enumerate(self.compare_with):
            if not p.strip():
                raise ConfigError(f"{where}.compare_with[{i}]: the path of another run's folder is needed, got {p!r}")
        if len(set(self.compare_with)) != len(self.compare_with):
            raise ConfigError(f"{where}.compare_with: a run folder is named twice ({self.compare_with})")


@dataclass
class TransferConfig:
    """Further networks on which the run's adversarials are scored (the ``transfer`` stage)."""

    models: list[ModelConfig] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)

    def check(self, where: str) -> None:
        names = [m.name for m in self.models]
        for i, m in enumerate(self.models):
            m.check(f"{where}.models[{i}]")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.models: a network is named twice ({names})")


@dataclass
class SecurityConfig:
    """The security evaluation (the ``security`` stage): detectors against attackers who know them
    (see frad.evaluation.security and frad.pipeline.security_stage)."""

    enabled: bool = True
    #: benchmark detector names, or ``paper-best`` / ``frad-best`` (best targeted macro-AUC of the
    #: benchmark among the paper's configurations / among frad's own detectors)
    detectors: list[str] = field(default_factory=lambda: ["paper-best", "mahalanobis", "frad-best"])
    attacks: list[Literal["bim", "cw_l2", "deep_features"]] = field(
        default_factory=lambda: ["bim", "cw_l2", "deep_features"])
    settings: list[Literal["targeted", "untargeted"]] = field(default_factory=lambda: ["targeted", "untargeted"])
    max_sources: int | None = 32
    fpr: float = 0.05
    bim_epsilon: float = 0.03
    bim_steps: int = 10
    cw_binary_search_steps: int = 2
    cw_steps: int = 30
    cw_initial_const: float = 1.0
    deep_features_delta: float = 10.0
    deep_features_max_iter: int = 50
    deep_features_lambda: float = 1.0
    curve_epsilons: list[float] = field(default_factory=lambda: [0.0025, 0.005, 0.01, 0.02, 0.03])
    curve_settings: list[Literal["targeted", "untargeted"]] = field(default_factory=lambda: ["targeted"])
    batch_size: int = 16

    def check(self, where: str) -> None:
        from ..evaluation.benchmark import benchmark_names

        if not self.detectors or len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"{where}.detectors: a non-empty list of distinct detector names")
        named = [d for d in self.detectors if d not in ("paper-best", "frad-best")]
        try:
            benchmark_names(named)
        except ConfigError as exc:
            raise ConfigError(f"{where}.detectors: {exc} (or paper-best, frad-best)") from None
        for key in ("attacks", "settings", "curve_settings"):
            v = getattr(self, key)
            if len(set(v)) != len(v) or (key != "curve_settings" and not v):
                raise ConfigError(f"{where}.{key}: a{' non-empty' if key != 'curve_settings' else ''} list of "
                                  "distinct values")
        if self.max_sources is not None:
            _at_least(self.max_sources, 1, f"{where}.max_sources")
        _in_range(self.fpr, 0.0, 1.0, f"{where}.fpr", low_open=True, high_open=True)
        _in_range(self.bim_epsilon, 0.0, 1.0, f"{where}.bim_epsilon", low_open=True)
        _at_least(self.bim_steps, 1, f"{where}.bim_steps")
        _at_least(self.cw_binary_search_steps, 1, f"{where}.cw_binary_search_steps")
        _at_least(self.cw_steps, 1, f"{where}.cw_steps")
        _positive(self.cw_initial_const, f"{where}.cw_initial_const")
        _positive(self.deep_features_delta, f"{where}.deep_features_delta")
        _at_least(self.deep_features_max_iter, 1, f"{where}.deep_features_max_iter")
        _in_range(self.deep_features_lambda, 0.0, math.inf, f"{where}.deep_features_lambda")
        for i, e in enumerate(self.curve_epsilons):
            _in_range(e, 0.0, 1.0, f"{where}.curve_epsilons[{i}]", low_open=True)
        if len(set(self.curve_epsilons)) != len(self.curve_epsilons):
            raise ConfigError(f"{where}.curve_epsilons: distinct budgets")
        if self.curve_settings and not self.curve_epsilons:
            raise ConfigError(f"{where}.curve_epsilons: list at least one budget, or set curve_settings: []")
        _at_least(self.batch_size, 1, f"{where}.batch_size")


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    description: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    executor: str = "local"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    attacks: AttacksConfig = field(default_factory=AttacksConfig)
    deep_features: DeepFeaturesConfig = field(default_factory=DeepFeaturesConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    scenarios: ScenariosConfig = field(default_factory=ScenariosConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @property
    def executor_spec(self) -> ExecutorSpec:
        """Where the run's attack shards execute (``local``, ``ray`` or ``ray:ADDRESS``), typed."""
        if not isinstance(self.executor, str):
            raise ConfigError(f"executor: expected local, ray or ray:ADDRESS, got {self.executor!r}")
        return ExecutorSpec.parse(self.executor)  # its errors name the 'executor' setting

    def check(self) -> None:
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ConfigError(f"name: a plain run name is needed (no slashes), got {self.name!r}")
        _at_least(self.seed, 0, "seed")
        if self.threads is not None:
            _at_least(self.threads, 1, "threads")
        self.executor_spec  # noqa: B018 - fails here, before any work, on a bad value
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(f"device: {self.device!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
        for f in dataclasses.fields(self):
            sec = getattr(self, f.name)
            if dataclasses.is_dataclass(sec):
                sec.check(f.name)
        if self.benchmark.enabled and self.benchmark.detectors is not None:
            absent = [d for d in self.security.detectors
                      if d not in ("paper-best", "frad-best") and d not in self.benchmark.detectors]
            if absent:
                raise ConfigError(f"security.detectors: {', '.join(absent)} not among benchmark.detectors "
                                  "(the security stage attacks the benchmark's trained detectors)")
        if self.model.name in [m.name for m in self.transfer.models]:
            raise ConfigError(f"transfer.models: {self.model.name!r} is the run's own network (scored anyway as the reference)")
        need = self.split.images_needed
        if self.data.min_images is not None and self.data.min_images < need:
            raise ConfigError(
                f"split: n_natural + n_source + min_head_images = {need} images per identity, more than "
                f"data.min_images = {self.data.min_images} guarantees; raise data.min_images or lower the split counts"
            )
        if self.data.max_images_per_identity is not None and self.data.max_images_per_identity < need:
            raise ConfigError(
                f"data.max_images_per_identity = {self.data.max_images_per_identity} is fewer than the split "
                f"needs per identity ({need} = n_natural + n_source + min_head_images)"
            )
        if self.data.source == "synthetic" and self.data.synthetic.images_per_identity < need:
            raise ConfigError(
                f"data.synthetic.images_per_identity = {self.data.synthetic.images_per_identity} is fewer than the "
                f"split needs per identity ({need} = split.n_natural + split.n_source + split.min_head_images)"
            )


# ---------------------------------------------------------------------------- checks
def _at_least(v: Any, low: int, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where}: an integer >= {low} is needed, got {v!r}")


def _positive(v: Any, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{where}: a positive number is needed, got {v!r}")


def _in_range(v: Any, low: float, high: float, where: str, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{where}: a number in {lb}{low}, {high}{hb} is needed, got {v!r}")


# ---------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " or ".join(repr(m.value) for m in tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Any: "any value"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_type_name(tp)} is needed, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: null is needed, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: one of {_type_name(tp)} is needed, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # typed values (frad.kinds) from their strings
        if isinstance(value, str) and value in {m.value for m in tp}:
            return tp(value)
        raise ConfigError(f"{where}: one of {_type_name(tp)} is needed, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {_type_name(tp)} is needed, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_convert(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: a mapping is needed, got {value!r}")
        key_t, val_t = typing.get_args(tp)
        return {_convert(k, key_t, where): _convert(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: {_type_name(tp)} is needed, got {value!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: a mapping of settings is needed, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; known here: {', '.join(fields)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> ExperimentConfig:
    """Build and fully check a config from plain data (what a YAML file holds)."""
    try:
        cfg = _build(ExperimentConfig, data, "")
        cfg.check()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return cfg


def load_config(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read a YAML config; ``overrides`` are dotted keys (``{'data.path': '/lfw'}``) applied first."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: cannot override {key}: {p} is not a section")
        node[parts[-1]] = value
    return config_from_dict(data, source=str(path))


def config_to_dict(cfg: Any) -> Any:
    """Plain data (JSON/YAML-able) of a config or one of its sections (typed values as their strings)."""
    return _plain(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg)


def _plain(value: Any) -> Any:
    """``value`` with every enum (:mod:`frad.kinds`) replaced by its string, containers walked."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def section_hash(*parts: Any) -> str:
    """A stable short hash of config sections and upstream hashes (a stage's input record)."""
    blob = json.dumps([config_to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
