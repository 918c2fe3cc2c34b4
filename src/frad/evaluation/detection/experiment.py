"""The detection experiment of the paper's Sections 4 and 5.2, step by step.

:func:`run_detection_experiment` reads like the experiment it runs:

1. ``_check_request``: the configurations and per-architecture / per-setting parameters,
   before any work (every detector's parameters are checked once);
2. ``_read_samples``: the natural, adversarial and deep-features metadata;
3. ``_split_by_source``: the train / test split by source image;
4. ``_fit_representatives``: medoids and centroids of the reference (head-training) features;
5. ``_data_record``: what was used, per setting (and the checks that each side has data);
6. ``_train_and_evaluate``: per (representative, metric) the trajectories, then per setting
   and configuration one detector trained (or resumed from its checkpoint) and evaluated on
   the test split, and on the deep-features adversarials of test sources (generalisation);
7. ``_finish``: everything in the configurations' order, the tables and the orderings check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ...detection.detectors import TrajectoryDetector, create_detector
from ...detection.representatives import ClassRepresentatives
from ...detection.sampling import as_id_array
from ...detection.trajectories import compute_trajectories
from ...errors import ConfigError, DataError
from ...kinds import SETTINGS
from ...utils.io import to_jsonable, write_json
from ...utils.progress import progress
from .configurations import ARCHS, PAPER_CONFIGURATIONS, DetectorConfig
from .inputs import (
    NATURAL,
    column,
    common_ids,
    detection_test_sources,
    isin,
    merge_params,
    n_rows,
    stable_seed,
    subset,
)
from .orderings import check_orderings
from .scores import FAMILY_ORDER, add_probability_thresholds, evaluate_scores, ordered
from .tables import detection_tables, eer_tables, generalisation_table
from .training import fit_or_resume

__all__ = ["SETTINGS", "DetectionRun", "run_detection_experiment"]


@dataclass
class DetectionRun:
    """The detection stage's outcome: JSON-able ``results`` and the fitted objects."""

    results: dict[str, Any]
    detectors: dict[tuple[str, str], TrajectoryDetector] = field(default_factory=dict)
    representatives: dict[str, ClassRepresentatives] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``results.json``, ``representatives/<kind>.*`` and ``detectors/<setting>/<key>.*``."""
        d = Path(directory)
        for kind, reps in self.representatives.items():
            reps.save(d / "representatives" / kind)
        for (setting, key), det in self.detectors.items():
            det.save(d / "detectors" / setting / key)
        path = d / "results.json"
        write_json(path, self.results)
        return path


# ---------------------------------------------------------------------------------------
# the samples and their split
# ---------------------------------------------------------------------------------------
@dataclass
class _Attacked:
    """Metadata of adversarial samples (classifier or deep-features attacks), row for row."""

    n: int
    attack: np.ndarray
    family: np.ndarray | None
    setting: np.ndarray
    source: np.ndarray
    success: np.ndarray
    test: np.ndarray | None = None  # on the test side of the split (set by _split_by_source)


def _read_attacked(features: Mapping[str, ArrayLike], meta: Mapping[str, ArrayLike], what: str,
                   *, with_family: bool) -> _Attacked:
    n = n_rows(features, what)
    return _Attacked(
        n=n,
        attack=column(meta, "attack", n, what).astype(str),
        family=column(meta, "family", n, what).astype(str) if with_family else None,
        setting=column(meta, "setting", n, what).astype(str),
        source=as_id_array(column(meta, "source_id", n, what), f"{what} source_id"),
        success=column(meta, "success", n, what, default=True).astype(bool),
    )


@dataclass
class _Samples:
    """The experiment's rows: natural source ids, adversarials, deep features, settings used."""

    natural_source: np.ndarray
    adversarial: _Attacked
    deep: _Attacked | None
    settings: list[str]
    present: list[str]
    natural_test: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    test_ids: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _read_samples(
    natural_features: Mapping[str, ArrayLike],
    natural_meta: Mapping[str, ArrayLike],
    adversarial_features: Mapping[str, ArrayLike],
    adversarial_meta: Mapping[str, ArrayLike],
    deep_features: Mapping[str, ArrayLike] | None,
    deep_meta: Mapping[str, ArrayLike] | None,
    settings: Sequence[str] | None,
    setting_params: Mapping[str, Mapping[str, Any]] | None,
) -> _Samples:
    """Read and check the metadata; the settings used are those asked for, else those present."""
    n_nat = n_rows(natural_features, "natural")
    nat_src = as_id_array(column(natural_meta, "source_id", n_nat, "natural"), "natural source_id")
    adv = _read_attacked(adversarial_features, adversarial_meta, "adversarial", with_family=True)
    if (adv.attack == NATURAL).any():
        raise DataError(f"adversarial metadata: attack name {NATURAL!r} is reserved for natural samples")
    present = [s for s in SETTINGS if s in set(adv.setting)] + sorted(set(adv.setting) - set(SETTINGS))
    use_settings = list(settings) if settings is not None else present
    for s in use_settings:
        if not ((adv.setting == s) & adv.success).any():
            raise DataError(f"no successful adversarials for setting {s!r}; settings present: {present}")
    for s in setting_params or {}:
        if s not in use_settings:
            raise ConfigError(f"setting_params key {s!r} is not a setting of this run ({use_settings})")
    deep = None
    if deep_features is not None:
        deep = _read_attacked(deep_features, deep_meta if deep_meta is not None else {}, "deep-features",
                              with_family=False)
    elif deep_meta is not None:
        raise DataError("deep_meta given without deep_features")
    nat_src, adv.source = common_ids(nat_src, adv.source)
    return _Samples(nat_src, adv, deep, use_settings, present)


def _split_by_source(samples: _Samples, test_source_ids: ArrayLike | None, test_size: float,
                     random_state: int) -> None:
    """Mark the test side of every row: from ``test_source_ids``, else a split of the natural
    and attack-source ids alone (:func:`detection_test_sources`)."""
    adv = samples.adversarial
    if test_source_ids is None:
        test_ids = detection_test_sources(samples.natural_source, adv.source, test_size=test_size,
                                          random_state=random_state)
    else:
        test_ids = np.unique(as_id_array(test_source_ids, "test_source_ids"))
    samples.test_ids = test_ids
    samples.natural_test = isin(samples.natural_source, test_ids)
    adv.test = isin(adv.source, test_ids)
    if samples.natural_test.all() or not samples.natural_test.any():
        raise DataError("the test split must hold some but not all natural samples")
    if samples.deep is not None:
        samples.deep.test = isin(samples.deep.source, test_ids)


# ---------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------
def _check_request(
    configurations: Sequence[DetectorConfig | str],
    settings: Sequence[str] | None,
    detector_params: Mapping[str, Any] | None,
    arch_params: Mapping[str, Mapping[str, Any]] | None,
    setting_params: Mapping[str, Mapping[str, Any]] | None,
) -> list[DetectorConfig]:
    """The configurations, parsed; every detector's parameters checked before any work."""
    configs = [DetectorConfig.parse(c) for c in configurations]
    if not configs:
        raise ConfigError("configurations is empty")
    if len({c.key for c in configs}) != len(configs):
        raise ConfigError("configurations contains duplicates")
    for k in arch_params or {}:
        if k not in ARCHS:
            raise ConfigError(f"arch_params key must be one of {', '.join(ARCHS)}, got {k!r}")
    for c in configs:
        for s in settings or SETTINGS:
            params = merge_params(detector_params, arch_params, setting_params, c.arch, s)
            create_detector(c.arch, **params)._check_params()
    return configs


def _fit_representatives(
    configs: Sequence[DetectorConfig],
    reference_features: Mapping[str, ArrayLike],
    reference_labels: ArrayLike,
    reference_predictions: ArrayLike | None,
    layers: Sequence[str] | None,
    device: str | torch.device | None,
) -> dict[str, ClassRepresentatives]:
    """One fitted :class:`ClassRepresentatives` per representative kind the configurations use."""
    kinds = list(dict.fromkeys(c.representative for c in configs))
    return {
        k: ClassRepresentatives(k, layers=layers, device=device).fit(
            reference_features, reference_labels, reference_predictions
        )
        for k in kinds
    }


def _data_record(samples: _Samples, reps: Mapping[str, ClassRepresentatives],
                 family_order: Sequence[str]) -> dict[str, Any]:
    """How many samples each side of the split holds, per setting (each side must hold some)."""
    adv, nat_test = samples.adversarial, samples.natural_test
    first = next(iter(reps.values()))
    data: dict[str, Any] = {
        "natural": {"total": int(nat_test.size), "train": int((~nat_test).sum()), "test": int(nat_test.sum())},
        "test_sources": int(samples.test_ids.size),
        "representatives": {
            "n_samples": first.n_samples_fit_,
            "n_classes": first.n_classes,
            "layers": list(first.layers_),
        },
        "adversarial": {},
    }
    assert adv.family is not None and adv.test is not None
    for s in samples.settings:
        m = adv.setting == s
        fams_test = adv.family[m & adv.success & adv.test]
        data["adversarial"][s] = {
            "total": int(m.sum()),
            "successful": int((m & adv.success).sum()),
            "train": int((m & adv.success & ~adv.test).sum()),
            "test": int((m & adv.success & adv.test).sum()),
            "test_by_family": {f: int((fams_test == f).sum()) for f in ordered(fams_test.tolist(), family_order)},
        }
        if data["adversarial"][s]["test"] == 0 or data["adversarial"][s]["train"] == 0:
            raise DataError(f"setting {s!r}: no successful adversarials on the train or on the test side of the split")
    deep = samples.deep
    if deep is not None:
        assert deep.test is not None
        data["deep_features"] = {
            "total": int(deep.n),
            "successful": int(deep.success.sum()),
            "used_test_sources": int((deep.success & deep.test).sum()),
            "dropped_seen_sources": int((deep.success & ~deep.test).sum()),
        }
    return data


@dataclass(frozen=True)
class _Training:
    """How every detector is trained and evaluated (the experiment's keyword arguments)."""

    detector_params: Mapping[str, Any] | None
    arch_params: Mapping[str, Mapping[str, Any]] | None
    setting_params: Mapping[str, Mapping[str, Any]] | None
    family_order: Sequence[str]
    n_bootstrap: int
    confidence: float
    random_state: int
    device: str | torch.device | None
    checkpoint_dir: str | os.PathLike[str] | None

    def params(self, config: DetectorConfig, setting: str) -> dict[str, Any]:
        """The detector's parameters, with its seed and device unless given."""
        params = merge_params(self.detector_params, self.arch_params, self.setting_params, config.arch, setting)
        params.setdefault("random_state", stable_seed(self.random_state, setting))
        if self.device is not None:
            params.setdefault("device", self.device)
        return params

    def evaluate(self, nat_scores: np.ndarray, adv_scores: np.ndarray, groups: np.ndarray,
                 *seed_parts: str, order: Sequence[str]) -> dict[str, Any]:
        """:func:`evaluate_scores` of logits, with each EER threshold also as a probability."""
        ev = evaluate_scores(nat_scores, adv_scores, groups, family_order=order, n_bootstrap=self.n_bootstrap,
                             confidence=self.confidence, random_state=stable_seed(self.random_state, *seed_parts))
        add_probability_thresholds(ev)
        return ev


@dataclass
class _Trajectories:
    """Trajectories of one (representative, metric): naturals, successful adversarials (with
    their metadata) and the deep-features adversarials of test sources (or None)."""

    natural: np.ndarray
    adversarial: np.ndarray
    setting: np.ndarray
    attack: np.ndarray
    family: np.ndarray
    source: np.ndarray
    test: np.ndarray
    deep: np.ndarray | None
    deep_setting: np.ndarray | None
    deep_attack: np.ndarray | None


def _trajectories(samples: _Samples, features: tuple[Mapping[str, ArrayLike], ...], reps: ClassRepresentatives,
                  metric: str, layers: Sequence[str], device: str | torch.device | None) -> _Trajectories:
    natural_features, adversarial_features, deep_features = features
    adv = samples.adversarial
    assert adv.family is not None and adv.test is not None
    ok = np.flatnonzero(adv.success)
    T_nat = compute_trajectories(natural_features, reps, metric, device=device)
    T_adv = compute_trajectories(subset(adversarial_features, ok, layers), reps, metric, device=device)
    T_df = df_setting = df_attack = None
    deep = samples.deep
    if deep is not None:
        assert deep.test is not None
        keep = deep.success & deep.test
        if keep.any():
            T_df = compute_trajectories(subset(deep_features, np.flatnonzero(keep), layers), reps, metric,
                                        device=device)
            df_setting, df_attack = deep.setting[keep], deep.attack[keep]
    return _Trajectories(T_nat, T_adv, adv.setting[ok], adv.attack[ok], adv.family[ok], adv.source[ok],
                         adv.test[ok], T_df, df_setting, df_attack)


def _training_rows(T: _Trajectories, nat_source: np.ndarray, nat_test: np.ndarray, setting: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, groups, source ids) of one setting's training side: naturals, then adversarials."""
    tr_adv = (T.setting == setting) & ~T.test
    X = np.concatenate([T.natural[~nat_test], T.adversarial[tr_adv]])
    y = np.r_[np.zeros((~nat_test).sum(), dtype=np.int64), np.ones(tr_adv.sum(), dtype=np.int64)]
    groups = np.r_[np.full((~nat_test).sum(), NATURAL), T.attack[tr_adv]].astype(str)
    src = np.concatenate([nat_source[~nat_test], T.source[tr_adv]])
    return X, y, groups, src


def _evaluate_detector(run: DetectionRun, det: TrajectoryDetector, config: DetectorConfig, setting: str,
                       T: _Trajectories, nat_test: np.ndarray, how: _Training) -> None:
    """Score the test split (and the unseen deep-features attacks) and record the results."""
    results = run.results
    te_adv = (T.setting == setting) & T.test
    nat_scores = det.decision_function(T.natural[nat_test])
    ev = how.evaluate(nat_scores, det.decision_function(T.adversarial[te_adv]), T.family[te_adv],
                      setting, config.key, "bootstrap", order=how.family_order)
    results["curves"]["classifier"][setting][config.key] = ev.pop("curves")
    ev["training"] = det.training_summary()
    results["detectors"][setting][config.key] = ev
    if T.deep is None:
        return
    assert T.deep_setting is not None and T.deep_attack is not None
    m = T.deep_setting == setting
    if m.any():
        ev_df = how.evaluate(nat_scores, det.decision_function(T.deep[m]), T.deep_attack[m],
                             setting, config.key, "generalisation", order=())
        results["curves"]["generalisation"].setdefault(setting, {})[config.key] = ev_df.pop("curves")
        results["generalisation"].setdefault(setting, {"detail": {}})["detail"][config.key] = ev_df


def _train_and_evaluate(run: DetectionRun, samples: _Samples, configs: Sequence[DetectorConfig],
                        features: tuple[Mapping[str, ArrayLike], ...], how: _Training) -> None:
    """Every (setting, configuration) detector, trajectories computed once per (representative, metric)."""
    reps = run.representatives
    layers = next(iter(reps.values())).layers_
    bar = progress(total=len(configs) * len(samples.settings), desc="detectors", unit="detector")
    for kind in reps:
        for metric in dict.fromkeys(c.metric for c in configs if c.representative == kind):
            todo = [c for c in configs if c.representative == kind and c.metric == metric]
            T = _trajectories(samples, features, reps[kind], metric, layers, how.device)
            for s in samples.settings:
                X, y, groups, src = _training_rows(T, samples.natural_source, samples.natural_test, s)
                for c in todo:
                    det = fit_or_resume(c, s, how.params(c, s), X, y, groups, src, how.checkpoint_dir)
                    run.detectors[(s, c.key)] = det
                    _evaluate_detector(run, det, c, s, T, samples.natural_test, how)
                    bar.update(1)
    bar.close()


def _finish(run: DetectionRun, configs: Sequence[DetectorConfig], settings: Sequence[str],
            family_order: Sequence[str]) -> None:
    """Everything in the configurations' order (the loops ran by representative and metric),
    then the tables and the orderings check."""
    results = run.results

    def by_config(d: dict[str, Any]) -> dict[str, Any]:
        return {c.key: d[c.key] for c in configs if c.key in d}

    for s in settings:
        results["detectors"][s] = by_config(results["detectors"][s])
        results["curves"]["classifier"][s] = by_config(results["curves"]["classifier"][s])
        if s in results["generalisation"]:
            results["generalisation"][s]["detail"] = by_config(results["generalisation"][s]["detail"])
            results["curves"]["generalisation"][s] = by_config(results["curves"]["generalisation"][s])
    run.detectors = {(s, c.key): run.detectors[(s, c.key)] for s in settings for c in configs}
    results["tables"] = detection_tables(results, configs, family_order)
    results["eer_tables"] = eer_tables(results, configs)
    for s, g in results["generalisation"].items():
        g.update(generalisation_table(g["detail"], configs, s))
    results["orderings"] = check_orderings(results)


# ---------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------
def run_detection_experiment(
    natural_features: Mapping[str, ArrayLike],
    natural_meta: Mapping[str, ArrayLike],
    adversarial_features: Mapping[str, ArrayLike],
    adversarial_meta: Mapping[str, ArrayLike],
    reference_features: Mapping[str, ArrayLike],
    reference_labels: ArrayLike,
    *,
    reference_predictions: ArrayLike | None = None,
    deep_features: Mapping[str, ArrayLike] | None = None,
    deep_meta: Mapping[str, ArrayLike] | None = None,
    layers: Sequence[str] | None = None,
    configurations: Sequence[DetectorConfig | str] = PAPER_CONFIGURATIONS,
    settings: Sequence[str] | None = None,
    detector_params: Mapping[str, Any] | None = None,
    arch_params: Mapping[str, Mapping[str, Any]] | None = None,
    setting_params: Mapping[str, Mapping[str, Any]] | None = None,
    test_size: float = 0.3,
    test_source_ids: ArrayLike | None = None,
    family_order: Sequence[str] = FAMILY_ORDER,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> DetectionRun:
    """Train and evaluate every configuration and setting; see :mod:`frad.evaluation.detection`.

    ``detector_params`` go to every detector (e.g. ``max_epochs``, ``patience``, ``lr``),
    ``arch_params`` per architecture (``{"lstm": {"bidirectional": True}}``) and
    ``setting_params`` per setting (``{"targeted": {"lr": 3e-4}}``), later ones winning.
    With ``checkpoint_dir`` every trained detector is saved there at once and reused by a
    later call whose training data and parameters are the same (resume after interruption).
    """
    configs = _check_request(configurations, settings, detector_params, arch_params, setting_params)
    samples = _read_samples(natural_features, natural_meta, adversarial_features, adversarial_meta,
                            deep_features, deep_meta, settings, setting_params)
    _split_by_source(samples, test_source_ids, test_size, random_state)
    reps = _fit_representatives(configs, reference_features, reference_labels, reference_predictions, layers, device)
    results: dict[str, Any] = {
        "format": "frad.detection-results",
        "version": 1,
        "settings": samples.settings,
        "configurations": [c.as_dict() for c in configs],
        "params": {
            "test_size": test_size if test_source_ids is None else None,
            "random_state": random_state,
            "n_bootstrap": int(n_bootstrap),
            "confidence": float(confidence),
            "detector_params": to_jsonable(detector_params or {}),
            "arch_params": to_jsonable(arch_params or {}),
            "setting_params": to_jsonable(setting_params or {}),
        },
        "data": _data_record(samples, reps, family_order),
        "detectors": {s: {} for s in samples.settings},
        "generalisation": {},
        "curves": {"classifier": {s: {} for s in samples.settings}, "generalisation": {}},
    }
    run = DetectionRun(results, {}, reps)
    how = _Training(detector_params, arch_params, setting_params, family_order, n_bootstrap, confidence,
                    random_state, device, checkpoint_dir)
    features = (natural_features, adversarial_features, deep_features if deep_features is not None else {})
    _train_and_evaluate(run, samples, configs, features, how)
    _finish(run, configs, samples.settings, family_order)
    return run
