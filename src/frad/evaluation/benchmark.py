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
from ..utils.io import write_json
from ..utils.progress import progress
from .detection import (
    FAMILY_ORDER,
    NATURAL,
    PAPER_CONFIGURATIONS,
    DetectorConfig,
    _fit_or_resume,
    _isin,
    _merge_params,
    _ordered,
    _stable_seed,
    evaluate_scores,
)
from ..utils.metrics import tar_at_far
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
    names = benchmark_names(detectors)
    skipped = {n: why for n, why in unavailable_peers().items() if n in names}
    names = [n for n in names if n not in skipped]
    blocks = list(blocks)
    taps = list(taps) if taps is not None else blocks
    nat_src = as_id_array(natural_meta["source_id"], "natural source_id").astype(str)
    nat_lab = np.asarray(natural_meta["label"])
    adv_att = np.asarray(adversarial_meta["attack"]).astype(str)
    adv_fam = np.asarray(adversarial_meta["family"]).astype(str)
    adv_set = np.asarray(adversarial_meta["setting"]).astype(str)
    adv_src = as_id_array(adversarial_meta["source_id"], "adversarial source_id").astype(str)
    adv_ok = np.asarray(adversarial_meta["success"]).astype(bool)
    adv_q = np.asarray(adversarial_meta.get("success_quantised", adv_ok)).astype(int) == 1
    test_ids = np.unique(as_id_array(test_source_ids, "test_source_ids").astype(str))
    nat_test = _isin(nat_src, test_ids)
    adv_test = _isin(adv_src, test_ids)
    use_settings = list(settings) if settings is not None else [s for s in ("targeted", "untargeted")
                                                                 if (adv_set == s).any()]
    if not 0 < validation_size < 1:
        raise ConfigError(f"benchmark validation_size must be in (0, 1), got {validation_size}")
    has_df = deep_features is not None and deep_meta is not None
    if has_df:
        df_att = np.asarray(deep_meta["attack"]).astype(str)  # type: ignore[index]
        df_set = np.asarray(deep_meta["setting"]).astype(str)  # type: ignore[index]
        df_src = as_id_array(deep_meta["source_id"], "deep-features source_id").astype(str)  # type: ignore[index]
        df_ok = np.asarray(deep_meta["success"]).astype(bool)  # type: ignore[index]
        df_q = np.asarray(deep_meta.get("success_quantised", df_ok)).astype(int) == 1  # type: ignore[union-attr]
        df_use = df_ok & _isin(df_src, test_ids)

    reps = dict(representatives or {})
    for kind in {DetectorConfig.parse(n).representative for n in names if n not in BASELINES + OURS + PEERS}:
        if kind not in reps:
            reps[kind] = ClassRepresentatives(kind, layers=blocks, device=device).fit(
                {t: reference_features[t] for t in blocks}, reference_labels, reference_predictions)

    out = Path(out_dir) if out_dir is not None else None
    results: dict[str, Any] = {
        "format": "frad.detector-benchmark", "version": 1, "settings": use_settings, "fpr": fpr,
        "validation_size": validation_size, "n_bootstrap": int(n_bootstrap),
        "detectors": [{"name": n, "title": DETECTOR_TITLES.get(n, n)} for n in names],
        "face_model": dict(face_model or {}), "results": {s: {} for s in use_settings}, "data": {},
        "skipped": [{"name": n, "title": DETECTOR_TITLES.get(n, n), "reason": why} for n, why in skipped.items()],
        "peers": peer_versions(),
    }
    index: dict[str, Any] = {"format": "frad.run-detectors", "version": 1, "face_model": dict(face_model or {}),
                             "detectors": {}}
    ok_rows = np.flatnonzero(adv_ok)
    ok_pos = np.full(adv_ok.size, -1)
    ok_pos[ok_rows] = np.arange(ok_rows.size)
    traj_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    gaussians: tuple[Any, ...] | None = None
    bar = progress(total=len(names) * len(use_settings), desc="benchmark", unit="detector")
    for s in use_settings:
        tr_adv = np.flatnonzero((adv_set == s) & adv_ok & ~adv_test)
        te_adv = np.flatnonzero((adv_set == s) & adv_ok & adv_test)
        tr_nat, te_nat = np.flatnonzero(~nat_test), np.flatnonzero(nat_test)
        if tr_adv.size == 0 or te_adv.size == 0:
            raise DataError(f"benchmark, setting {s!r}: no successful adversarials on the train or test side")
        y = np.r_[np.zeros(tr_nat.size, np.int64), np.ones(tr_adv.size, np.int64)]
        groups = np.r_[np.full(tr_nat.size, NATURAL), adv_att[tr_adv]].astype(str)
        fam_rows = np.r_[np.full(tr_nat.size, NATURAL), adv_fam[tr_adv]].astype(str)
        src = np.concatenate([nat_src[tr_nat], adv_src[tr_adv]])
        labels = np.r_[nat_lab[tr_nat], np.full(tr_adv.size, nat_lab[0])]
        train_feats = {t: np.concatenate([np.asarray(natural_features[t])[tr_nat],
                                          np.asarray(adversarial_features[t])[tr_adv]]) for t in taps}
        seed = _stable_seed(random_state, s)
        tr, va = split_by_source(src, y, test_size=validation_size, random_state=np.random.default_rng(seed))
        nat_te_feats = _sub(natural_features, te_nat, taps)
        adv_te_feats = _sub(adversarial_features, te_adv, taps)
        q_rows = te_adv[adv_q[te_adv]]
        survive = {f: float(np.mean(adv_q[te_adv][adv_fam[te_adv] == f])) for f in np.unique(adv_fam[te_adv])}
        results["data"][s] = {"train_natural": int(tr_nat.size), "train_adversarial": int(tr_adv.size),
                              "validation_rows": int(va.size), "fit_rows": int(tr.size),
                              "threshold_naturals": int((y[va] == 0).sum()) + (
                                  0 if threshold_naturals is None else len(next(iter(threshold_naturals.values())))),
                              "test_natural": int(te_nat.size), "test_adversarial": int(te_adv.size),
                              "test_adversarial_uint8": int(q_rows.size), "uint8_survival": survive}
        if has_df:
            dfr = np.flatnonzero(df_use & (df_set == s))
            dfq = dfr[df_q[dfr]]
            results["data"][s]["deep_features_test"] = int(dfr.size)
            results["data"][s]["deep_features_uint8_survival"] = {
                a: float(np.mean(df_q[dfr][df_att[dfr] == a])) for a in np.unique(df_att[dfr])}
        for name in names:
            t0 = time.perf_counter()
            if name in BASELINES + OURS + PEERS:
                det = _build(name, taps, seed, device)
                if isinstance(det, (MahalanobisDetector, FusionDetector)) and gaussians is not None:
                    # class Gaussians are the same for every setting and detector: fitted once, reused
                    det.reference_taps_, det.means_, det.precisions_, det.classes_ = gaussians  # type: ignore[union-attr]
                else:
                    det.fit_reference(reference_features, reference_labels, reference_predictions)
                    if isinstance(det, MahalanobisDetector):
                        gaussians = (det.reference_taps_, det.means_, det.precisions_, det.classes_)
                det.fit_features({t: v[tr] for t, v in train_feats.items()}, y[tr], labels=labels[tr],
                                 groups=groups[tr], source_ids=src[tr])
            else:
                c = DetectorConfig.parse(name)
                params = _merge_params(detector_params, arch_params, setting_params, c.arch, s)
                params.setdefault("random_state", seed)
                if device is not None:
                    params.setdefault("device", device)
                if float(params.get("validation_size", 0.2)) != float(validation_size):
                    raise ConfigError("benchmark validation_size must equal the trajectory detectors' validation_size")
                det = TrajectoryFaceDetector(c.arch, c.representative, c.metric, representatives=reps[c.representative],
                                             device=device)
                # computed as the detectors stage computes them (all naturals, all successful adversarials),
                # so the training rows are bit-identical and its checkpoints are reused
                tk = (c.representative, c.metric)
                if tk not in traj_cache:
                    traj_cache[tk] = (
                        compute_trajectories({t: natural_features[t] for t in blocks}, reps[c.representative],
                                             c.metric, device=device),
                        compute_trajectories(_sub(adversarial_features, ok_rows, blocks), reps[c.representative],
                                             c.metric, device=device),
                    )
                T_nat, T_ok = traj_cache[tk]
                X = np.concatenate([T_nat[tr_nat], T_ok[ok_pos[tr_adv]]])
                det.use_network(_fit_or_resume(c, s, params, X, y, groups, src, checkpoint_dir))
            fit_seconds = time.perf_counter() - t0
            if face_model:
                det.describe_face_model(str(face_model.get("name")), face_model.get("fingerprint"))
            val_scores = det.score_features({t: v[va] for t, v in train_feats.items()})
            val_auc = macro_auc(y[va], val_scores, fam_rows[va])
            thr_scores = val_scores[y[va] == 0]
            if threshold_naturals is not None:
                thr_scores = np.r_[thr_scores, det.score_features(_sub(threshold_naturals, slice(None), taps))]
            det.set_threshold(thr_scores, fpr=fpr)
            t1 = time.perf_counter()
            nat_scores = det.score_features(nat_te_feats)
            adv_scores = det.score_features(adv_te_feats)
            score_seconds = time.perf_counter() - t1
            bs = _stable_seed(random_state, s, name, "benchmark")
            rec: dict[str, Any] = {
                "validation_macro_auc": float(val_auc), "threshold": det.threshold_,
                "threshold_rule": det.threshold_rule_, "fit_seconds": fit_seconds,
                "score_seconds_per_1000": 1000 * score_seconds / max(nat_scores.size + adv_scores.size, 1),
                "float32": _eval(nat_scores, adv_scores, adv_fam[te_adv], det.threshold_, order=FAMILY_ORDER,
                                 n_bootstrap=n_bootstrap, seed=bs, fpr=fpr),
            }
            if adversarial_uint8 is not None and q_rows.size:
                rec["uint8"] = _eval(nat_scores, det.score_features(_sub(adversarial_uint8, q_rows, taps)),
                                     adv_fam[q_rows], det.threshold_, order=FAMILY_ORDER, n_bootstrap=n_bootstrap,
                                     seed=bs, fpr=fpr)
            if has_df and dfr.size:
                rec["generalisation"] = _eval(nat_scores, det.score_features(_sub(deep_features, dfr, taps)),
                                              df_att[dfr], det.threshold_, order=(), n_bootstrap=n_bootstrap,
                                              seed=bs + 1, fpr=fpr)
                if deep_uint8 is not None and dfq.size:
                    rec["generalisation_uint8"] = _eval(
                        nat_scores, det.score_features(_sub(deep_uint8, dfq, taps)), df_att[dfq], det.threshold_,
                        order=(), n_bootstrap=n_bootstrap, seed=bs + 1, fpr=fpr)
            results["results"][s][name] = rec
            key = f"{s}/{name}"
            if out is not None:
                folder = out / "detectors" / s / name
                det.save(folder, metadata={"name": key, "setting": s, "title": DETECTOR_TITLES.get(name, name),
                                           "validation_macro_auc": float(val_auc)})
                index["detectors"][key] = {"folder": str(folder.relative_to(out)), "setting": s, "name": name,
                                           "kind": det.kind, "title": DETECTOR_TITLES.get(name, name),
                                           "validation_macro_auc": float(val_auc), "threshold": det.threshold_,
                                           "threshold_rule": det.threshold_rule_}
            bar.update(1)
    bar.close()
    results["tables"] = benchmark_tables(results)
    results["goal"] = goal_check(results)
    if index["detectors"]:
        index["chosen"] = max(index["detectors"], key=lambda k: index["detectors"][k]["validation_macro_auc"])
        results["chosen"] = index["chosen"]
    if out is not None:
        write_json(out / "results.json", results)
        write_json(out / "index.json", index)  # last: marks a complete benchmark folder
    return results


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
    fams = _ordered([f for ev in evs.values() if ev for f in ev["families"]], order)
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
    recs = (results.get("results") or {}).get("targeted") or {}
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
