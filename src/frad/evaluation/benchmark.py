"""The detector benchmark: frad's detectors beside the field's baselines, on the same data.

``run_benchmark(...)`` trains every named detector per setting (targeted, untargeted) on
the same training rows and evaluates it with the same code:

- training rows: the natural images and the setting's successful classifier-attack
  adversarials whose source is on the training side of the run's split by source image
  (the rows and order the paper's trajectory detectors of the ``detectors`` stage use, so
  their checkpoints are reused rather than retrained);
- validation: a share ``validation_size`` of those rows' source ids, drawn exactly as the
  trajectory networks draw their own validation split.  Baselines are fitted on the rest;
  every detector's validation macro-AUC (mean over attack families) comes from these rows,
  and its operating threshold (``fpr`` of the validation naturals above it) from their
  naturals plus any ``threshold_naturals`` (natural images no detector trains on);
- test: the natural test images against each family's successful test adversarials: ROC
  AUC with a bootstrap interval, TPR at ``fpr`` false positives (on the test naturals'
  ROC), and the TPR / FPR at the operating threshold chosen on validation;
- generalisation: deep-features adversarials (never seen in training) crafted from test
  sources, per attack (the paper's Tables 5 and 6, extended to every detector);
- uint8: the same tables for the test adversarials rounded to 8-bit pixels that still fool
  the FR system (``success_quantised``), beside the share that survives rounding.

The detector names (:data:`BASELINES`, the paper's eight trajectory configurations such as
``lstm-medoid-euclidean``, ``fusion``, and the maintained peer of :data:`PEERS`, ART's
``BinaryActivationDetector``) map to the classes of :mod:`frad.detection`.  The peer is an
optional extra (``frad[art]``): it is benchmarked when ART imports, and otherwise left out
with the reason in ``results["skipped"]`` and under every benchmark table.  The operating
point (the threshold's test FPR with its exact interval beside the nominal rate) is a table
of its own (:mod:`frad.evaluation.operating_point`).
Every fitted detector is saved as a folder under ``out_dir/detectors/<setting>/<name>``
(see :mod:`frad.detection.base`), with ``out_dir/index.json`` listing them and the run's
chosen detector (best validation macro-AUC).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..detection.art_peer import ART_INSTALL_HINT, ARTActivationDetector, art_available, art_version
from ..detection.base import AdversarialDetector
from ..detection.detectors import macro_auc
from ..detection.fusion import FusionDetector
from ..detection.knn import DeepKNNDetector
from ..detection.lid import LIDDetector
from ..detection.mahalanobis import MahalanobisDetector
from ..detection.representatives import ClassRepresentatives
from ..detection.sampling import as_id_array, split_by_source
from ..detection.trajectories import compute_trajectories
from ..detection.trajectory import TrajectoryFaceDetector
from ..errors import ConfigError, DataError
from ..kinds import SETTINGS, Setting
from ..utils.io import write_json
from ..utils.progress import progress
from ..utils.metrics import tar_at_far
from .detection.configurations import PAPER_CONFIGURATIONS, DetectorConfig
from .detection.inputs import NATURAL, isin, merge_params, stable_seed
from .detection.scores import FAMILY_ORDER, evaluate_scores, ordered
from .detection.training import fit_or_resume
from .operating_point import operating_point, operating_point_table

__all__ = ["BASELINES", "OURS", "PEERS", "benchmark_names", "unavailable_peers", "peer_versions", "run_benchmark",
           "benchmark_tables", "DETECTOR_TITLES"]

BASELINES: tuple[str, ...] = ("mahalanobis", "mahalanobis-unsupervised", "lid", "deep-knn")
OURS: tuple[str, ...] = ("fusion",)
#: maintained peers from other libraries (optional extras; benchmarked when importable)
PEERS: tuple[str, ...] = ("art-binary-activation",)
DETECTOR_TITLES: dict[str, str] = {
    "mahalanobis": "Mahalanobis (Lee et al. 2018), per-layer LR",
    "mahalanobis-unsupervised": "Mahalanobis, unsupervised (no adversarials)",
    "lid": "LID (Ma et al. 2018)",
    "deep-knn": "Deep k-NN (Papernot & McDaniel 2018)",
    "fusion": "frad fusion (ours): Mahalanobis + trajectory margins + LID",
    "art-binary-activation": "ART BinaryActivationDetector (maintained peer): MLP on one pooled tap, chosen on training rows",
    **{c.key: f"{c.label} (Massoli et al.)" for c in PAPER_CONFIGURATIONS},
}


def peer_versions() -> dict[str, str]:
    """Versions of the installed peer libraries (empty when none is installed)."""
    v = art_version()
    return {"adversarial-robustness-toolbox": v} if v is not None and art_available() else {}


def unavailable_peers() -> dict[str, str]:
    """Peer detectors that cannot run here, with the reason (e.g. ART not installed)."""
    return {} if art_available() else {
        "art-binary-activation": f"the Adversarial Robustness Toolbox is not installed; {ART_INSTALL_HINT}"}


def benchmark_names(names: Sequence[str] | None = None) -> list[str]:
    """The detectors to benchmark (default: the paper's eight, the baselines, ours and the peers), checked.

    The default keeps a peer even when its library is missing; :func:`run_benchmark` then
    skips it and says why (:func:`unavailable_peers`)."""
    default = [c.key for c in PAPER_CONFIGURATIONS] + list(BASELINES) + list(OURS) + list(PEERS)
    use = default if names is None else list(names)
    for n in use:
        if n not in default:
            try:
                DetectorConfig.parse(n)
            except ConfigError:
                raise ConfigError(f"benchmark detector {n!r} is unknown; known: {', '.join(default)}") from None
    if len(set(use)) != len(use):
        raise ConfigError("benchmark detectors contain duplicates")
    return use


def _build(name: str, taps: Sequence[str], seed: int, device: Any = None) -> AdversarialDetector:
    if name == "mahalanobis":
        return MahalanobisDetector(taps=taps, supervised=True, random_state=seed)
    if name == "mahalanobis-unsupervised":
        return MahalanobisDetector(taps=taps, supervised=False, random_state=seed)
    if name == "lid":
        return LIDDetector(taps=taps, random_state=seed)
    if name == "deep-knn":
        return DeepKNNDetector(taps=taps)
    if name == "fusion":
        return FusionDetector(taps=taps, random_state=seed)
    if name == "art-binary-activation":
        return ARTActivationDetector(taps=taps, random_state=seed, device=device)
    raise ConfigError(f"unknown benchmark detector {name!r}")


def _sub(features: Mapping[str, np.ndarray], rows: np.ndarray, taps: Sequence[str]) -> dict[str, np.ndarray]:
    return {t: np.asarray(features[t])[rows] for t in taps}


def _eval(nat: np.ndarray, adv: np.ndarray, fam: np.ndarray, threshold: float, *, order: Sequence[str],
          n_bootstrap: int, seed: int, fpr: float) -> dict[str, Any] | None:
    if adv.size == 0 or nat.size == 0:
        return None
    ev = evaluate_scores(nat, adv, fam, family_order=order, n_bootstrap=n_bootstrap, random_state=seed)
    ev.pop("curves", None)
    labels_all = np.r_[np.zeros(nat.size, bool), np.ones(adv.size, bool)]
    ev["pooled"]["tpr_at_fpr"] = tar_at_far(labels_all, np.r_[nat, adv], fpr)
    for f, m in ev["families"].items():
        a = adv[fam == f]
        m["tpr_at_fpr"] = tar_at_far(np.r_[np.zeros(nat.size, bool), np.ones(a.size, bool)], np.r_[nat, a], fpr)
        m["tpr_at_threshold"] = float(np.mean(a >= threshold))
    # counts and exact (Clopper-Pearson) intervals: a few dozen test naturals measure 5% only roughly
    ev["operating_point"] = operating_point(nat, adv, threshold)
    ev["fpr_target"] = fpr
    return ev


def run_benchmark(
    natural_features: Mapping[str, ArrayLike],
    natural_meta: Mapping[str, ArrayLike],
    adversarial_features: Mapping[str, ArrayLike],
    adversarial_meta: Mapping[str, ArrayLike],
    reference_features: Mapping[str, ArrayLike],
    reference_labels: ArrayLike,
    *,
    test_source_ids: ArrayLike,
    blocks: Sequence[str],
    taps: Sequence[str] | None = None,
    reference_predictions: ArrayLike | None = None,
    representatives: Mapping[str, ClassRepresentatives] | None = None,
    adversarial_uint8: Mapping[str, ArrayLike] | None = None,
    deep_features: Mapping[str, ArrayLike] | None = None,
    deep_meta: Mapping[str, ArrayLike] | None = None,
    deep_uint8: Mapping[str, ArrayLike] | None = None,
    detectors: Sequence[str] | None = None,
    settings: Sequence[str] | None = None,
    detector_params: Mapping[str, Any] | None = None,
    arch_params: Mapping[str, Mapping[str, Any]] | None = None,
    setting_params: Mapping[str, Mapping[str, Any]] | None = None,
    validation_size: float = 0.2,
    fpr: float = 0.05,
    n_bootstrap: int = 1000,
    random_state: int = 0,
    device: Any = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    face_model: Mapping[str, Any] | None = None,
    threshold_naturals: Mapping[str, ArrayLike] | None = None,
) -> dict[str, Any]:
    """Train, save and evaluate every detector per setting; returns the JSON-able results (see module doc).

    ``natural_meta``: ``source_id`` and ``label`` (identity) per natural image;
    ``adversarial_meta``: ``attack``, ``family``, ``setting``, ``source_id``, ``success`` and
    optionally ``success_quantised`` (1 when the uint8-rounded adversarial still fools the
    FR system); ``deep_meta``: ``attack``, ``setting``, ``source_id``, ``success``,
    optionally ``success_quantised``.  ``adversarial_uint8`` / ``deep_uint8``: features of
    the rounded adversarials, row for row.  ``face_model``: ``{"name", "fingerprint", ...}``
    recorded in every saved detector and the index.  ``threshold_naturals``: features of more
    natural images that no detector trains on (e.g. the FR head's validation images), added to
    the validation naturals when the operating threshold is chosen (a 5% quantile of a few
    dozen scores is too noisy to deploy).
    """
    names, skipped = _runnable(benchmark_names(detectors))
    blocks = list(blocks)
    taps = list(taps) if taps is not None else blocks
    if not 0 < validation_size < 1:
        raise ConfigError(f"benchmark validation_size must be in (0, 1), got {validation_size}")
    rows = _read_rows(natural_meta, adversarial_meta, deep_meta if deep_features is not None else None,
                      test_source_ids)
    use_settings = list(settings) if settings is not None else [s for s in SETTINGS if (rows.adv_set == s).any()]
    reference = (reference_features, reference_labels, reference_predictions)
    reps = _representatives(names, representatives, reference, blocks, device)
    out = Path(out_dir) if out_dir is not None else None
    results, index = _skeleton(names, use_settings, fpr, validation_size, n_bootstrap, face_model, skipped)
    fitter = _Fitter(rows, natural_features, adversarial_features, reference, reps, taps, blocks,
                     (detector_params, arch_params, setting_params), validation_size, device, checkpoint_dir)
    scoring = _Scoring(rows, adversarial_uint8, deep_features, deep_uint8, threshold_naturals, taps, fpr,
                       n_bootstrap, random_state)
    bar = progress(total=len(names) * len(use_settings), desc="benchmark", unit="detector")
    for s in use_settings:
        d = _setting_rows(rows, s, natural_features, adversarial_features, taps, random_state, validation_size)
        results["data"][s] = _data_record(rows, d, threshold_naturals)
        for name in names:
            t0 = time.perf_counter()
            det = fitter.fit(name, s, d)
            fit_seconds = time.perf_counter() - t0
            if face_model:
                det.describe_face_model(str(face_model.get("name")), face_model.get("fingerprint"))
            val_auc = scoring.threshold(det, d)
            results["results"][s][name] = scoring.record(det, name, s, d, val_auc, fit_seconds)
            if out is not None:
                _save_detector(det, out, index, s, name, val_auc)
            bar.update(1)
    bar.close()
    _finish(results, index, out)
    return results


def _runnable(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The detectors that can run here, and the peers left out because their library is missing (with why)."""
    skipped = {n: why for n, why in unavailable_peers().items() if n in names}
    return [n for n in names if n not in skipped], skipped


def _representatives(names: Sequence[str], given: Mapping[str, ClassRepresentatives] | None,
                     reference: tuple[Mapping[str, ArrayLike], ArrayLike, ArrayLike | None], blocks: Sequence[str],
                     device: Any) -> dict[str, ClassRepresentatives]:
    """The class representatives the trajectory detectors need: those given, the rest fitted."""
    reps = dict(given or {})
    features, labels, predictions = reference
    for kind in {DetectorConfig.parse(n).representative for n in names if n not in BASELINES + OURS + PEERS}:
        if kind not in reps:
            reps[kind] = ClassRepresentatives(kind, layers=blocks, device=device).fit(
                {t: features[t] for t in blocks}, labels, predictions)
    return reps


def _skeleton(names: Sequence[str], settings: Sequence[str], fpr: float, validation_size: float, n_bootstrap: int,
              face_model: Mapping[str, Any] | None,
              skipped: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The benchmark's results and its detectors' index, before any detector is fitted; ``skipped``:
    peer detectors left out, with the reason (shown under every benchmark table)."""
    results: dict[str, Any] = {
        "format": "frad.detector-benchmark", "version": 1, "settings": list(settings), "fpr": fpr,
        "validation_size": validation_size, "n_bootstrap": int(n_bootstrap),
        "detectors": [{"name": n, "title": DETECTOR_TITLES.get(n, n)} for n in names],
        "face_model": dict(face_model or {}), "results": {s: {} for s in settings}, "data": {},
        "skipped": [{"name": n, "title": DETECTOR_TITLES.get(n, n), "reason": why} for n, why in (skipped or {}).items()],
        "peers": peer_versions(),
    }
    index: dict[str, Any] = {"format": "frad.run-detectors", "version": 1, "face_model": dict(face_model or {}),
                             "detectors": {}}
    return results, index


def _finish(results: dict[str, Any], index: dict[str, Any], out: Path | None) -> None:
    """The tables, the goal check and the chosen detector; written (the index last) to ``out``."""
    results["tables"] = benchmark_tables(results)
    results["goal"] = goal_check(results)
    if index["detectors"]:
        index["chosen"] = max(index["detectors"], key=lambda k: index["detectors"][k]["validation_macro_auc"])
        results["chosen"] = index["chosen"]
    if out is not None:
        write_json(out / "results.json", results)
        write_json(out / "index.json", index)  # last: marks a complete benchmark folder


# ---------------------------------------------------------------------------------------
# the benchmark, step by step
# ---------------------------------------------------------------------------------------
@dataclass
class _Rows:
    """The metadata of every sample, and which side of the run's split by source it is on."""

    nat_src: np.ndarray
    nat_lab: np.ndarray
    nat_test: np.ndarray
    adv_att: np.ndarray
    adv_fam: np.ndarray
    adv_set: np.ndarray
    adv_src: np.ndarray
    adv_ok: np.ndarray
    adv_q: np.ndarray  # the uint8-rounded adversarial still fools the FR system
    adv_test: np.ndarray
    df_att: np.ndarray | None = None  # deep-features adversarials (None without them)
    df_set: np.ndarray | None = None
    df_q: np.ndarray | None = None
    df_use: np.ndarray | None = None  # successful and crafted from a test source


def _read_rows(natural_meta: Mapping[str, ArrayLike], adversarial_meta: Mapping[str, ArrayLike],
               deep_meta: Mapping[str, ArrayLike] | None, test_source_ids: ArrayLike) -> _Rows:
    test_ids = np.unique(as_id_array(test_source_ids, "test_source_ids").astype(str))
    nat_src = as_id_array(natural_meta["source_id"], "natural source_id").astype(str)
    adv_src = as_id_array(adversarial_meta["source_id"], "adversarial source_id").astype(str)
    adv_ok = np.asarray(adversarial_meta["success"]).astype(bool)
    rows = _Rows(
        nat_src=nat_src, nat_lab=np.asarray(natural_meta["label"]), nat_test=isin(nat_src, test_ids),
        adv_att=np.asarray(adversarial_meta["attack"]).astype(str),
        adv_fam=np.asarray(adversarial_meta["family"]).astype(str),
        adv_set=np.asarray(adversarial_meta["setting"]).astype(str),
        adv_src=adv_src, adv_ok=adv_ok,
        adv_q=np.asarray(adversarial_meta.get("success_quantised", adv_ok)).astype(int) == 1,
        adv_test=isin(adv_src, test_ids),
    )
    if deep_meta is not None:
        df_src = as_id_array(deep_meta["source_id"], "deep-features source_id").astype(str)
        df_ok = np.asarray(deep_meta["success"]).astype(bool)
        rows.df_att = np.asarray(deep_meta["attack"]).astype(str)
        rows.df_set = np.asarray(deep_meta["setting"]).astype(str)
        rows.df_q = np.asarray(deep_meta.get("success_quantised", df_ok)).astype(int) == 1
        rows.df_use = df_ok & isin(df_src, test_ids)
    return rows


@dataclass
class _SettingRows:
    """One setting's training rows (naturals, then its successful train-side adversarials), their
    split into fit and validation rows, and its test rows."""

    tr_nat: np.ndarray
    te_nat: np.ndarray
    tr_adv: np.ndarray
    te_adv: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    fam_rows: np.ndarray
    src: np.ndarray
    labels: np.ndarray
    train_feats: dict[str, np.ndarray]
    seed: int
    tr: np.ndarray
    va: np.ndarray
    nat_te_feats: dict[str, np.ndarray]
    adv_te_feats: dict[str, np.ndarray]
    q_rows: np.ndarray  # test adversarials that survive uint8 rounding
    dfr: np.ndarray | None  # deep-features rows of this setting used for generalisation
    dfq: np.ndarray | None


def _setting_rows(rows: _Rows, s: str, natural_features: Mapping[str, ArrayLike],
                  adversarial_features: Mapping[str, ArrayLike], taps: Sequence[str], random_state: int,
                  validation_size: float) -> _SettingRows:
    tr_adv = np.flatnonzero((rows.adv_set == s) & rows.adv_ok & ~rows.adv_test)
    te_adv = np.flatnonzero((rows.adv_set == s) & rows.adv_ok & rows.adv_test)
    tr_nat, te_nat = np.flatnonzero(~rows.nat_test), np.flatnonzero(rows.nat_test)
    if tr_adv.size == 0 or te_adv.size == 0:
        raise DataError(f"benchmark, setting {s!r}: no successful adversarials on the train or test side")
    y = np.r_[np.zeros(tr_nat.size, np.int64), np.ones(tr_adv.size, np.int64)]
    src = np.concatenate([rows.nat_src[tr_nat], rows.adv_src[tr_adv]])
    seed = stable_seed(random_state, s)
    tr, va = split_by_source(src, y, test_size=validation_size, random_state=np.random.default_rng(seed))
    dfr = dfq = None
    if rows.df_use is not None:
        assert rows.df_set is not None and rows.df_q is not None
        dfr = np.flatnonzero(rows.df_use & (rows.df_set == s))
        dfq = dfr[rows.df_q[dfr]]
    return _SettingRows(
        tr_nat=tr_nat, te_nat=te_nat, tr_adv=tr_adv, te_adv=te_adv, y=y,
        groups=np.r_[np.full(tr_nat.size, NATURAL), rows.adv_att[tr_adv]].astype(str),
        fam_rows=np.r_[np.full(tr_nat.size, NATURAL), rows.adv_fam[tr_adv]].astype(str),
        src=src, labels=np.r_[rows.nat_lab[tr_nat], np.full(tr_adv.size, rows.nat_lab[0])],
        train_feats={t: np.concatenate([np.asarray(natural_features[t])[tr_nat],
                                        np.asarray(adversarial_features[t])[tr_adv]]) for t in taps},
        seed=seed, tr=tr, va=va, nat_te_feats=_sub(natural_features, te_nat, taps),
        adv_te_feats=_sub(adversarial_features, te_adv, taps), q_rows=te_adv[rows.adv_q[te_adv]], dfr=dfr, dfq=dfq,
    )


def _data_record(rows: _Rows, d: _SettingRows, threshold_naturals: Mapping[str, ArrayLike] | None) -> dict[str, Any]:
    """How many rows each part of one setting holds, and the share that survives uint8 rounding."""
    te_fam = rows.adv_fam[d.te_adv]
    survive = {f: float(np.mean(rows.adv_q[d.te_adv][te_fam == f])) for f in np.unique(te_fam)}
    n_extra = 0 if threshold_naturals is None else len(next(iter(threshold_naturals.values())))
    rec: dict[str, Any] = {
        "train_natural": int(d.tr_nat.size), "train_adversarial": int(d.tr_adv.size),
        "validation_rows": int(d.va.size), "fit_rows": int(d.tr.size),
        "threshold_naturals": int((d.y[d.va] == 0).sum()) + n_extra,
        "test_natural": int(d.te_nat.size), "test_adversarial": int(d.te_adv.size),
        "test_adversarial_uint8": int(d.q_rows.size), "uint8_survival": survive}
    if d.dfr is not None:
        assert rows.df_att is not None and rows.df_q is not None
        rec["deep_features_test"] = int(d.dfr.size)
        rec["deep_features_uint8_survival"] = {
            a: float(np.mean(rows.df_q[d.dfr][rows.df_att[d.dfr] == a])) for a in np.unique(rows.df_att[d.dfr])}
    return rec


@dataclass
class _Fitter:
    """Fits the benchmark's detectors, sharing what every one of them may reuse: the class
    Gaussians (the same for every setting and Mahalanobis-based detector) and the trajectories
    per (representative, metric), computed as the detectors stage computes them."""

    rows: _Rows
    natural_features: Mapping[str, ArrayLike]
    adversarial_features: Mapping[str, ArrayLike]
    reference: tuple[Mapping[str, ArrayLike], ArrayLike, ArrayLike | None]  # features, labels, predictions
    reps: Mapping[str, ClassRepresentatives]
    taps: Sequence[str]
    blocks: Sequence[str]
    params: tuple[Mapping[str, Any] | None, Mapping[str, Mapping[str, Any]] | None,
                  Mapping[str, Mapping[str, Any]] | None]  # common, per architecture, per setting
    validation_size: float
    device: Any
    checkpoint_dir: str | os.PathLike[str] | None
    gaussians: tuple[Any, ...] | None = None
    traj_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def fit(self, name: str, s: str, d: _SettingRows) -> AdversarialDetector:
        if name in BASELINES + OURS + PEERS:
            return self._fit_baseline(name, d)
        return self._fit_trajectory(name, s, d)

    def _fit_baseline(self, name: str, d: _SettingRows) -> AdversarialDetector:
        det = _build(name, self.taps, d.seed, self.device)
        if isinstance(det, (MahalanobisDetector, FusionDetector)) and self.gaussians is not None:
            # class Gaussians are the same for every setting and detector: fitted once, reused
            det.reference_taps_, det.means_, det.precisions_, det.classes_ = self.gaussians  # type: ignore[union-attr]
        else:
            det.fit_reference(*self.reference)
            if isinstance(det, MahalanobisDetector):
                self.gaussians = (det.reference_taps_, det.means_, det.precisions_, det.classes_)
        det.fit_features({t: v[d.tr] for t, v in d.train_feats.items()}, d.y[d.tr], labels=d.labels[d.tr],
                         groups=d.groups[d.tr], source_ids=d.src[d.tr])
        return det

    def _fit_trajectory(self, name: str, s: str, d: _SettingRows) -> AdversarialDetector:
        c = DetectorConfig.parse(name)
        params = merge_params(*self.params, c.arch, s)
        params.setdefault("random_state", d.seed)
        if self.device is not None:
            params.setdefault("device", self.device)
        if float(params.get("validation_size", 0.2)) != float(self.validation_size):
            raise ConfigError("benchmark validation_size must equal the trajectory detectors' validation_size")
        det = TrajectoryFaceDetector(c.arch, c.representative, c.metric, representatives=self.reps[c.representative],
                                     device=self.device)
        # computed as the detectors stage computes them (all naturals, all successful adversarials),
        # so the training rows are bit-identical and its checkpoints are reused
        T_nat, T_ok = self._trajectories(c)
        ok_pos = np.full(self.rows.adv_ok.size, -1)
        ok_pos[np.flatnonzero(self.rows.adv_ok)] = np.arange(int(self.rows.adv_ok.sum()))
        X = np.concatenate([T_nat[d.tr_nat], T_ok[ok_pos[d.tr_adv]]])
        det.use_network(fit_or_resume(c, s, params, X, d.y, d.groups, d.src, self.checkpoint_dir))
        return det

    def _trajectories(self, c: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
        tk = (c.representative, c.metric)
        if tk not in self.traj_cache:
            reps = self.reps[c.representative]
            ok_rows = np.flatnonzero(self.rows.adv_ok)
            self.traj_cache[tk] = (
                compute_trajectories({t: self.natural_features[t] for t in self.blocks}, reps, c.metric,
                                     device=self.device),
                compute_trajectories(_sub(self.adversarial_features, ok_rows, self.blocks), reps, c.metric,
                                     device=self.device),
            )
        return self.traj_cache[tk]


@dataclass(frozen=True)
class _Scoring:
    """The test inputs every detector of a setting is scored on, and how."""

    rows: _Rows
    adversarial_uint8: Mapping[str, ArrayLike] | None
    deep_features: Mapping[str, ArrayLike] | None
    deep_uint8: Mapping[str, ArrayLike] | None
    threshold_naturals: Mapping[str, ArrayLike] | None
    taps: Sequence[str]
    fpr: float
    n_bootstrap: int
    random_state: int

    def threshold(self, det: AdversarialDetector, d: _SettingRows) -> float:
        """Set the operating threshold on the validation naturals (plus ``threshold_naturals``);
        returns the validation macro-AUC."""
        val_scores = det.score_features({t: v[d.va] for t, v in d.train_feats.items()})
        val_auc = macro_auc(d.y[d.va], val_scores, d.fam_rows[d.va])
        thr_scores = val_scores[d.y[d.va] == 0]
        if self.threshold_naturals is not None:
            thr_scores = np.r_[thr_scores, det.score_features(_sub(self.threshold_naturals, slice(None), self.taps))]
        det.set_threshold(thr_scores, fpr=self.fpr)
        return float(val_auc)

    def record(self, det: AdversarialDetector, name: str, s: str, d: _SettingRows, val_auc: float,
               fit_seconds: float) -> dict[str, Any]:
        """Scores of the test split (float32, uint8) and of the unseen deep-features attacks."""
        rows, taps, thr = self.rows, self.taps, det.threshold_
        t1 = time.perf_counter()
        nat_scores = det.score_features(d.nat_te_feats)
        adv_scores = det.score_features(d.adv_te_feats)
        score_seconds = time.perf_counter() - t1
        bs = stable_seed(self.random_state, s, name, "benchmark")

        def ev(adv: np.ndarray, fam: np.ndarray, order: Sequence[str], seed: int) -> dict[str, Any] | None:
            return _eval(nat_scores, adv, fam, thr, order=order, n_bootstrap=self.n_bootstrap, seed=seed, fpr=self.fpr)

        rec: dict[str, Any] = {
            "validation_macro_auc": val_auc, "threshold": thr,
            "threshold_rule": det.threshold_rule_, "fit_seconds": fit_seconds,
            "score_seconds_per_1000": 1000 * score_seconds / max(nat_scores.size + adv_scores.size, 1),
            "float32": ev(adv_scores, rows.adv_fam[d.te_adv], FAMILY_ORDER, bs),
        }
        if self.adversarial_uint8 is not None and d.q_rows.size:
            rec["uint8"] = ev(det.score_features(_sub(self.adversarial_uint8, d.q_rows, taps)),
                              rows.adv_fam[d.q_rows], FAMILY_ORDER, bs)
        if self.deep_features is not None and d.dfr is not None and d.dfr.size:
            assert rows.df_att is not None
            rec["generalisation"] = ev(det.score_features(_sub(self.deep_features, d.dfr, taps)),
                                       rows.df_att[d.dfr], (), bs + 1)
            if self.deep_uint8 is not None and d.dfq is not None and d.dfq.size:
                rec["generalisation_uint8"] = ev(det.score_features(_sub(self.deep_uint8, d.dfq, taps)),
                                                 rows.df_att[d.dfq], (), bs + 1)
        return rec


def _save_detector(det: AdversarialDetector, out: Path, index: dict[str, Any], s: str, name: str,
                   val_auc: float) -> None:
    """Write the fitted detector under ``out/detectors/<setting>/<name>`` and list it in the index."""
    key = f"{s}/{name}"
    folder = out / "detectors" / s / name
    det.save(folder, metadata={"name": key, "setting": s, "title": DETECTOR_TITLES.get(name, name),
                               "validation_macro_auc": val_auc})
    index["detectors"][key] = {"folder": str(folder.relative_to(out)), "setting": s, "name": name,
                               "kind": det.kind, "title": DETECTOR_TITLES.get(name, name),
                               "validation_macro_auc": val_auc, "threshold": det.threshold_,
                               "threshold_rule": det.threshold_rule_}


def _cell(ev: Mapping[str, Any] | None, family: str | None) -> Any:
    if ev is None:
        return None
    if family is None:
        return {"value": ev["macro_auc"], "ci": ev.get("macro_auc_ci")} if ev.get("macro_auc_ci") else ev["macro_auc"]
    m = ev["families"].get(family)
    if m is None:
        return None
    return {"value": m["auc"], "ci": m.get("auc_ci")} if m.get("auc_ci") else m["auc"]


def _table(results: Mapping[str, Any], setting: str, part: str, title: str, notes: list[str]) -> dict[str, Any] | None:
    recs = results["results"].get(setting) or {}
    evs = {n: r.get(part) for n, r in recs.items()}
    if not any(evs.values()):
        return None
    order = FAMILY_ORDER if not part.startswith("generalisation") else ()
    fams = ordered([f for ev in evs.values() if ev for f in ev["families"]], order)
    pct = int(round(100 * float(results.get("fpr", 0.05))))
    cols = ["Detector", *fams, "Macro-AUC", f"TPR at {pct}% FPR (pooled)", "Validation macro-AUC"]
    rows = []
    for n, ev in evs.items():
        rows.append([DETECTOR_TITLES.get(n, n), *[_cell(ev, f) for f in fams], _cell(ev, None),
                     None if ev is None else ev["pooled"]["tpr_at_fpr"], recs[n]["validation_macro_auc"]])
    return {"title": title, "columns": cols, "rows": rows,
            "formats": ["", *[".3f"] * (len(fams) + 1), "pct1", ".3f"], "notes": notes}


def benchmark_tables(results: Mapping[str, Any]) -> dict[str, Any]:
    """The report's benchmark tables (float32 and uint8; classifier attacks and deep features)."""
    tables: dict[str, Any] = {}
    base = ["ROC AUC of each family's test adversarials against all natural test images [95% bootstrap interval]; "
            "TPR at the stated false-positive rate on the natural test images; every detector trained on the same "
            "rows, its threshold and validation macro-AUC from the same validation split."]
    for sk in results.get("skipped") or []:
        base = [*base, f"Not run: {sk['title']}: {sk['reason']}."]
    for s in results["settings"]:
        surv = results["data"].get(s, {}).get("uint8_survival", {})
        surv_txt = ", ".join(f"{f} {v:.0%}" for f, v in surv.items())
        for part, tid, title, extra in (
            ("float32", f"benchmark_{s}", f"Detector benchmark: {s} attacks (float32 adversarials)", []),
            ("uint8", f"benchmark_{s}_uint8", f"Detector benchmark: {s} attacks rounded to uint8 that still fool "
             "the FR system", [f"Share of successful test adversarials that survive rounding: {surv_txt}."]),
            ("generalisation", f"benchmark_{s}_deep_features", f"Detector benchmark: {s} deep-features attacks never "
             "seen in training (Tables 5-6 extended)", []),
            ("generalisation_uint8", f"benchmark_{s}_deep_features_uint8", f"Detector benchmark: {s} deep-features "
             "attacks, rounded to uint8 and still successful", []),
        ):
            t = _table(results, s, part, title, base + extra)
            if t is not None:
                tables[tid] = t
        op = operating_point_table(results, s, DETECTOR_TITLES)
        if op is not None:
            tables[f"benchmark_{s}_operating_point"] = op
    return tables


def goal_check(results: Mapping[str, Any], *, macro: float = 0.95, cw: float = 0.85, df: float = 0.90) -> dict[str, Any]:
    """The issue's goal for frad's best detector: targeted macro-AUC, CW AUC and unseen deep-features AUC."""
    recs = (results.get("results") or {}).get(Setting.TARGETED) or {}
    rows = {}
    for n, r in recs.items():
        ev = r.get("float32")
        if not ev:
            continue
        g = r.get("generalisation")
        df_min = min((m["auc"] for m in g["families"].values()), default=None) if g else None
        cw_auc = ev["families"].get("CW", {}).get("auc")
        rows[n] = {"macro_auc": ev["macro_auc"], "cw_auc": cw_auc, "deep_features_min_auc": df_min,
                   "meets": bool(ev["macro_auc"] >= macro and (cw_auc is None or cw_auc >= cw)
                                 and (df_min is None or df_min >= df))}
    best = max(rows, key=lambda n: rows[n]["macro_auc"]) if rows else None
    return {"targets": {"targeted_macro_auc": macro, "cw_auc": cw, "deep_features_auc": df}, "detectors": rows,
            "best": best, "met_by": [n for n, v in rows.items() if v["meets"]]}
