"""The stages of an experiment, in order.  Each reads its inputs through the run context,
writes its outputs into the run folder and returns a JSON-able summary for its record.

data -> features -> classifier -> recognition -> attacks -> deep_features -> trajectories
-> detectors -> benchmark -> security -> scenarios -> transfer -> report
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..evaluation.scenarios import attack_family, delta_label
from ..kinds import SETTINGS, AttackKind, Setting
from ..utils.io import save_npz, write_json
from .config import ExperimentConfig
from .context import RunContext, build_dataset

__all__ = ["Stage", "STAGES"]

log = logging.getLogger("frad.run")


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    depends: tuple[str, ...]
    sections: Callable[[ExperimentConfig], Any]
    run: Callable[[RunContext], dict[str, Any]]
    version: int = 1
    #: the stage trains only small models: on a CPU it runs with one torch thread, which does not
    #: collapse when other jobs share the cores (benchmarks/RESULTS.md); restored after the stage
    small_models: bool = False


# ---------------------------------------------------------------------------- 1. data
def run_data(ctx: RunContext) -> dict[str, Any]:
    from ..data.split import SplitSettings, make_split

    cfg = ctx.cfg
    ds = build_dataset(cfg)
    ctx.provide("dataset", ds)
    settings = SplitSettings(
        n_natural=cfg.split.n_natural, n_source=cfg.split.n_source,
        head_fractions=tuple(cfg.split.head_fractions), min_head_images=cfg.split.min_head_images, seed=cfg.seed,
    )
    split = make_split(ds, settings)
    split.write(ctx.run_dir)
    ctx.invalidate("split")
    desc = ds.describe()
    write_json(ctx.path("dataset.json"), {**desc, "content_key": ds.content_key(),
                                          "problems": [p.__dict__ | {"path": str(p.path)} for p in ds.problems]})
    if ds.problems:
        log.info("data: %d problem file(s) skipped (listed in dataset.json)", len(ds.problems))
    warnings: list[str] = []
    need = max(cfg.split.images_needed, cfg.data.min_images or 0)
    if split.dropped:
        dropped_images = int(sum(split.dropped.values()))
        msg = (f"{len(split.dropped)} identities ({dropped_images} images) were left out for having fewer than {need} "
               f"usable images (data.min_images, or split.n_natural + split.n_source + split.min_head_images); "
               f"{len(split.classes)} identities remain. Their names are in split.json.")
        if cfg.data.min_images is not None and cfg.data.min_images >= cfg.split.images_needed:
            log.info("data: %s", msg)  # the config asked for this cut (e.g. LFW's people with >= 10 images)
        else:
            warnings.append(msg)  # a cut the user did not ask for: said at the top of the report
            log.warning("data: %s", msg)
    log.info("data: %s", split)
    return {
        "dataset": {"name": desc.get("dataset"), "variant": desc.get("variant"), "synthetic": desc.get("synthetic")},
        "identities": len(split.classes),
        "images": len(split),
        "split": split.counts(),
        "dropped_identities": len(split.dropped),
        "dropped_images": int(sum(split.dropped.values())),
        "images_needed_per_identity": need,
        "problem_files": len(ds.problems),
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------- 2. features
def run_features(ctx: RunContext) -> dict[str, Any]:
    feats = ctx.features
    used = ctx.split.indices("natural", "source", "train", "val", "test")
    bad = [int(i) for i in used if not feats.ok[i]]
    if bad:
        names = ", ".join(str(ctx.dataset.images[i].path) for i in bad[:5])
        raise DataError(f"{len(bad)} image(s) of the split could not be read or aligned: {names}")
    from .checks import check_face_finding

    methods = feats.methods or []
    counts = {m: methods.count(m) for m in sorted(set(methods))}
    used_methods = [methods[int(i)] for i in used] if methods else []
    face_finding = check_face_finding(ctx.cfg, {m: used_methods.count(m) for m in sorted(set(used_methods))})
    log.info("features: %d images, %d taps; faces %s", len(feats), len(feats.taps), counts)
    return {"images": len(feats), "taps": list(feats.taps), "alignment": counts, "model": ctx.model.info.name,
            "architecture": ctx.model.info.architecture, "fingerprint": ctx.model.fingerprint(),
            "face_finding": face_finding}


# ---------------------------------------------------------------------------- 3. classifier head
def run_classifier(ctx: RunContext) -> dict[str, Any]:
    from ..recognition.head_training import HeadTrainer

    c = ctx.cfg.classifier
    emb = ctx.features.embedding
    split = ctx.split

    def xy(role: str) -> tuple[np.ndarray, np.ndarray]:
        return emb[split.indices(role)], split.labels(role)

    (xtr, ytr), (xva, yva), (xte, yte) = xy("train"), xy("val"), xy("test")
    trainer = HeadTrainer(
        dropout=c.dropout, lr=c.lr, momentum=c.momentum, batch_size=c.batch_size, max_epochs=c.max_epochs,
        lr_patience=c.lr_patience, early_stopping=c.early_stopping, standardize=c.standardize,
        random_state=ctx.cfg.seed, device=ctx.device,
    )
    trainer.fit(xtr, ytr, xva, yva, n_classes=len(split.classes))
    trainer.save(ctx.path("classifier", "head"), class_names=list(split.classes))
    ctx.invalidate("head", "classifier")
    xn, yn = xy("natural")
    xs, ys = xy("source")
    out = {
        "test_top1": trainer.score(xte, yte) if len(yte) else None,
        "test_top5": trainer.topk_accuracy(xte, yte, 5) if len(yte) else None,
        "val_accuracy": trainer.val_accuracy_,
        "natural_top1": trainer.score(xn, yn),
        "source_top1": trainer.score(xs, ys),
        "epochs": len(trainer.history_),
        "best_epoch": trainer.best_epoch_,
        "classes": len(split.classes),
        "train_images": len(ytr),
        "test_images": len(yte),
    }
    write_json(ctx.path("classifier", "metrics.json"), out)
    log.info("classifier: head top-1 %.2f%% on %d test images (%d epochs)", 100 * (out["test_top1"] or 0), len(yte), out["epochs"])
    return out


# ---------------------------------------------------------------------------- 4. FR system
def run_recognition(ctx: RunContext) -> dict[str, Any]:
    from ..recognition.verification import Verifier, sample_pairs

    r = ctx.cfg.recognition
    emb = ctx.features.embedding
    split = ctx.split
    ident = ctx.identifier
    save_npz(ctx.path("recognition", "templates.npz"), templates=np.asarray(ident.templates_, np.float32),
             classes=np.asarray(ident.classes_))
    xn, yn = emb[split.indices("natural")], split.labels("natural")
    xs, ys = emb[split.indices("source")], split.labels("source")
    # the threshold comes from head-training and validation images only
    idx = split.indices("train", "val")
    ver = Verifier(metric=r.verification_metric, far=r.far, impostor_ratio=r.impostor_ratio,
                   report_fars=(r.report_far,), random_state=ctx.cfg.seed).fit(emb[idx], split.labels("train", "val"))
    rep = ver.report()
    # held-out check on images the threshold never saw (natural + head-test)
    hidx = split.indices("natural", "test")
    hy = split.labels("natural", "test")
    i, j, same = sample_pairs(hy, impostor_ratio=r.impostor_ratio, random_state=ctx.cfg.seed + 1)
    held = ver.evaluate(emb[hidx][i], emb[hidx][j], same)
    out = {
        "identification": {"metric": ctx.metric, "method": r.method, "templates_from": "train",
                           "natural_top1": ident.score(xn, yn), "source_top1": ident.score(xs, ys),
                           "natural_top5": ident.topk_accuracy(xn, yn, min(5, len(split.classes)))},
        "verification": {**rep, "fitted_on": "train+val", "held_out": held},
    }
    write_json(ctx.path("recognition", "verification.json"), {**rep, "held_out": held})
    ctx.invalidate("verification")
    from .checks import check_recognition

    check_recognition(ctx.cfg, float(rep["auc"]))
    log.info("recognition: identification top-1 %.2f%% (natural), verification AUC %.4f, threshold %.4f (%s)",
             100 * out["identification"]["natural_top1"], rep["auc"], rep["threshold"], rep["threshold_rule"])
    return out


# ---------------------------------------------------------------------------- 5-6. attacks
def _source_arrays(ctx: RunContext, ids: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Source images as float32 N x 3 x H x W pixels, their labels and ids (optionally a subset)."""
    idx = ctx.split.indices("source")
    labels = ctx.split.labels("source")
    image_ids = ctx.split.image_ids("source")
    if ids is not None:
        keep = np.array([i in ids for i in image_ids], dtype=bool)
        idx, labels, image_ids = idx[keep], labels[keep], [i for i, k in zip(image_ids, keep) if k]
    pixels = ctx.images(idx).transpose(0, 3, 1, 2).astype(np.float32)
    return pixels, labels, image_ids


def _attack(ctx: RunContext, run_config: Any, folder: str, **kwargs: Any) -> dict[str, Any]:
    from ..attacks import format_success_table, load_results, prune_stale, run_attacks
    from ..errors import ConfigError

    out = ctx.path("attacks", folder, "run.json").parent
    prune_stale(run_config, out)
    run = functools.partial(run_attacks, run_config, out, device=ctx.device, executor=ctx.executor,
                            speedups_off_for=ctx.cfg.model.speedups_off_for, **kwargs)
    try:
        done = run()
    except ConfigError as exc:
        if "holds a run with different inputs or models" not in str(exc):
            raise
        # the stage runs again because its inputs changed (other sources, a retrained classifier):
        # the shards in the folder belong to the old inputs and can never be reused
        import shutil

        log.info("attacks (%s): the attacked sources or models changed; starting the folder afresh", folder)
        shutil.rmtree(out)
        done = run()
    skipped = sum(d.status == "skipped" for d in done)
    if skipped:
        log.info("attacks (%s): %d of %d shards were complete already and skipped", folder, skipped, len(done))
    res = load_results(out, attacks=[a.name for a in run_config.attacks])
    log.info("attack success rates (%s):\n%s", folder, format_success_table(res))
    return {"success": res.success_rates(), "shards": len(done), "shards_skipped": skipped,
            "attacks": [a.to_dict() for a in run_config.attacks]}


def _selection_summary(out: dict[str, Any], sel: Any) -> dict[str, Any]:
    out["selection"] = sel.summary()
    w = sel.warning()
    out["warnings"] = [w] if w else []
    if w:
        log.warning("attacks: %s", w)
    return out


def run_classifier_attacks(ctx: RunContext) -> dict[str, Any]:
    from .sources import recognised_sources

    # only sources the classifier recognises are attacked (the paper); the rest are counted
    emb = ctx.features.embedding[ctx.split.indices("source")]
    sel = recognised_sources(ctx.split.image_ids("source"), ctx.split.labels("source"), ctx.head.predict(emb),
                             system="classifier")
    if not sel.ids:
        raise DataError("attacks: the classifier recognises none of the source images, so there is nothing to "
                        "attack; check the data and the classifier stage's accuracy")
    pixels, labels, ids = _source_arrays(ctx, set(sel.ids))
    run_config = ctx.cfg.attacks.run_config(seed=ctx.cfg.seed)
    out = _attack(ctx, run_config, "classifier", images=pixels, labels=labels, source_ids=ids,
                  classifier=ctx.classifier)
    return _selection_summary(out, sel)


def detector_test_sources(ctx: RunContext) -> set[str]:
    """Source ids in the detectors' test split (deep-features attacks are crafted from these)."""
    from ..evaluation.detection import detection_test_sources

    ids = detection_test_sources(ctx.split.image_ids("natural"), ctx.split.image_ids("source"),
                                 test_size=ctx.cfg.detection.test_size, random_state=ctx.cfg.seed)
    return {str(i) for i in ids}


def deep_features_name(setting: Setting, delta: float) -> str:
    """The name of a deep-features attack of the run: ``deep_features-T-delta5``."""
    return f"deep_features-{setting.letter}-delta{delta:g}"


def run_deep_features(ctx: RunContext) -> dict[str, Any]:
    from ..attacks.grid import RunConfig

    d = ctx.cfg.deep_features
    if not d.enabled:
        return {"enabled": False}
    from .sources import FEW_SOURCES, deep_features_sources, recognised_sources

    src_ids = ctx.split.image_ids("source")
    emb = ctx.features.embedding[ctx.split.indices("source")]
    sel = recognised_sources(src_ids, ctx.split.labels("source"), ctx.identifier.predict(emb), system="FR system")
    test_ids = detector_test_sources(ctx) if d.sources == "test" else None
    chosen = deep_features_sources(src_ids, set(sel.ids), test_ids, d.max_sources, ctx.cfg.seed)
    if not chosen:
        raise DataError("deep_features: no source image is both recognised by the FR system and "
                        + ("in the detectors' test split" if d.sources == "test" else "available")
                        + "; set deep_features.enabled=false or use more data")
    if test_ids is not None:  # count only what the cap and the test split would have kept
        sel.left_out = [i for i in sel.left_out if i in test_ids]
    pixels, labels, ids = _source_arrays(ctx, set(chosen))
    params: dict[str, Any] = {"max_iterations": d.max_iter, "k": d.k, "metric": ctx.metric,
                              "feature": d.tap or "embedding"}
    if d.workers is not None:
        params["workers"] = d.workers
    entries = [{"attack": "deep_features", "targeted": s.targeted, "epsilon": float(delta),
                "name": deep_features_name(s, delta), **params}
               for s in d.settings for delta in d.deltas]
    run_config = RunConfig.from_dict({"seed": ctx.cfg.seed, "shard_size": d.shard_size, "batch_size": d.shard_size,
                                      "quantise": ctx.cfg.attacks.quantise, "attacks": entries})
    ident = ctx.identifier
    out = _attack(ctx, run_config, "deep_features", images=pixels, labels=labels, source_ids=ids,
                  face_model=ctx.model, templates=np.asarray(ident.templates_, np.float32),
                  template_labels=np.asarray(ident.classes_))
    out["sources"] = len(ids)
    out["source_rule"] = d.sources
    out = _selection_summary(out, sel)
    out["selection"]["attacked"] = len(ids)
    if len(ids) < FEW_SOURCES:
        w = (f"the deep-features attacks (and Tables 5-6) rest on {len(ids)} source images each; their AUCs and "
             f"success rates are rough (fewer than {FEW_SOURCES}: see the intervals)")
        out["warnings"].append(w)
        log.warning("deep_features: %s", w)
    return out


# ---------------------------------------------------------------------------- 7. trajectories
def _attack_runs(ctx: RunContext) -> list[tuple[str, Any]]:
    from ..attacks.shards import load_results

    runs = [(AttackKind.CLASSIFIER, load_results(ctx.run_dir / "attacks" / "classifier",
                                        attacks=[a.name for a in ctx.cfg.attacks.run_config(ctx.cfg.seed).attacks]))]
    if ctx.cfg.deep_features.enabled:
        runs.append((AttackKind.DEEP_FEATURES, load_results(ctx.run_dir / "attacks" / "deep_features")))
    return runs


def adversarial_table(ctx: RunContext) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features and metadata of every adversarial of the run (classifier and deep-features
    attacks), in a fixed order: per attack, its sources in shard order."""
    from ..utils.io import load_npz

    feats: dict[str, list[np.ndarray]] = {}
    meta: dict[str, list[Any]] = {k: [] for k in ("attack", "registry", "family", "setting", "kind", "source_id", "success",
                                                  "success_quantised", "true_label", "target", "predicted",
                                                  "epsilon", "l2", "linf")}
    for kind, run in _attack_runs(ctx):
        for name in run.attack_names:
            z = load_npz(ctx.run_dir / "trajectories" / "adversarial" / kind / f"{name}.npz")
            for t, v in z.items():
                feats.setdefault(t, []).append(v)
            idx = run.rows(name)
            rows = {k: v[idx] for k, v in run.table.items()}
            n = len(idx)
            fam = attack_family(str(rows["attack"][0]))
            label = name if kind is AttackKind.CLASSIFIER else delta_label(float(rows["epsilon"][0]))
            meta["attack"] += [label] * n
            meta["registry"] += [str(rows["attack"][0])] * n
            meta["family"] += [fam] * n
            meta["setting"] += [Setting.of(t) for t in rows["targeted"]]
            meta["kind"] += [kind] * n
            for col in ("source_id", "success", "success_quantised", "true_label", "target", "predicted",
                        "epsilon", "l2", "linf"):
                meta[col] += list(rows[col])
    return ({t: np.concatenate(v) for t, v in feats.items()},
            {k: np.asarray(v) for k, v in meta.items()})


def run_trajectories(ctx: RunContext) -> dict[str, Any]:
    from ..data.features import extract_features
    from ..detection.representatives import ClassRepresentatives

    import hashlib

    from ..utils.io import atomic_write_text

    counts = {}
    for kind, run in _attack_runs(ctx):
        for name in run.attack_names:
            path = ctx.path("trajectories", "adversarial", kind, f"{name}.npz")
            # the features are reused only for the very adversarials they were computed from
            rows = {k: v[run.rows(name)] for k, v in run.table.items()}
            key = hashlib.sha256(repr([[str(x) for x in rows[c]] for c in ("source_id", "l2", "linf")]).encode()
                                 ).hexdigest()[:20]
            key_path = path.with_suffix(".key")
            if path.is_file() and key_path.is_file() and key_path.read_text().strip() == key:
                counts[name] = "cached"
                continue
            adv = np.ascontiguousarray(run.adversarials(name, mmap=False))
            f = extract_features(ctx.model, adv, taps="all", batch_size=ctx.cfg.model.batch_size, device=ctx.device,
                                 cache=False, desc=f"features of {name}")
            save_npz(path, **f.taps)
            atomic_write_text(key_path, key + "\n")
            counts[name] = len(adv)
    # class representatives: head-training images the classifier gets right
    train_feats, train_labels = ctx.role_features("train")
    pred = ctx.head.predict(train_feats["embedding"])
    blocks = ctx.model.resolve_taps("blocks")
    reps = {}
    for kind in ("centroid", "medoid"):
        r = ClassRepresentatives(kind, layers=blocks).fit({t: train_feats[t] for t in blocks}, train_labels, predictions=pred)
        r.save(ctx.path("trajectories", "representatives", kind))
        reps[kind] = {"classes": len(r.classes_), "images_used": int(np.sum(r.counts_))}
    log.info("trajectories: features of %d adversarial sets; representatives from %d correctly classified "
             "head-training images", len(counts), reps["centroid"]["images_used"])
    from .checks import thin_representatives

    thin = thin_representatives([int(c) for c in np.asarray(r.counts_).ravel()])
    if thin:
        log.warning("trajectories: %s", thin)
    return {"adversarial_sets": counts, "representatives": reps, "layers": blocks,
            "train_correct": float(np.mean(pred == train_labels)), "warnings": [thin] if thin else []}


# ---------------------------------------------------------------------------- 8. detectors
def detection_inputs(ctx: RunContext, adversarial_features: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The data arguments of :func:`run_detection_experiment` for a run: naturals, the classifier
    and deep-features adversarials (``adversarial_features`` replaces the run's own, row for
    row), the head's training features and the detectors' test sources."""
    nat_feats, _ = ctx.role_features("natural")
    own_feats, adv_meta = adversarial_table(ctx)
    adv_feats = own_feats if adversarial_features is None else adversarial_features
    is_df = adv_meta["kind"] == AttackKind.DEEP_FEATURES
    blocks = ctx.model.resolve_taps("blocks")
    train_feats, train_labels = ctx.role_features("train")

    def sel(feats: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
        return {t: feats[t][mask] for t in blocks}

    def meta(mask: np.ndarray) -> dict[str, np.ndarray]:
        return {k: adv_meta[k][mask] for k in ("attack", "family", "setting", "source_id", "success")}

    return {
        "natural_features": {t: nat_feats[t] for t in blocks},
        "natural_meta": {"source_id": np.asarray(ctx.split.image_ids("natural"))},
        "adversarial_features": sel(adv_feats, ~is_df), "adversarial_meta": meta(~is_df),
        "reference_features": {t: train_feats[t] for t in blocks}, "reference_labels": train_labels,
        "reference_predictions": ctx.head.predict(train_feats["embedding"]),
        "deep_features": sel(adv_feats, is_df) if is_df.any() else None,
        "deep_meta": meta(is_df) if is_df.any() else None,
        "layers": blocks, "test_source_ids": np.asarray(sorted(detector_test_sources(ctx))),
    }


def run_detectors(ctx: RunContext) -> dict[str, Any]:
    from ..evaluation.detection import run_detection_experiment
    from ..evaluation.plots import plot_detection_figures

    d = ctx.cfg.detection
    run = run_detection_experiment(
        **detection_inputs(ctx), configurations=d.configurations, settings=d.settings,
        detector_params=d.detector, arch_params=d.arch, setting_params=d.setting,
        test_size=d.test_size, n_bootstrap=d.n_bootstrap, random_state=ctx.cfg.seed, device=ctx.device,
        checkpoint_dir=ctx.run_dir / "detection" / "checkpoints",
    )
    run.save(ctx.run_dir / "detection")
    figures = plot_detection_figures(run.results, ctx.run_dir / "figures")
    orderings = run.results.get("orderings", {})
    best = orderings.get("best_targeted_macro_auc") or {}
    log.info("detectors: %d trained; best targeted macro-AUC %s (%s)", len(run.detectors),
             f"{best['value']:.3f}" if best.get("value") is not None else "n/a", best.get("configuration", "-"))
    return {"detectors": len(run.detectors), "orderings": orderings,
            "figures": {k: str(v) for k, v in (figures or {}).items()}}


# ---------------------------------------------------------------------------- 9. FR scenarios
def _source_lookup(ctx: RunContext) -> tuple[dict[str, int], np.ndarray]:
    """Source id -> row of the source images (model inputs, N x H x W x 3 uint8)."""
    idx = ctx.split.indices("source")
    ids = ctx.split.image_ids("source")
    return {sid: i for i, sid in enumerate(ids)}, ctx.images(idx)


def _verification_summaries(ctx: RunContext, meta: dict[str, np.ndarray], labels: np.ndarray, emb_adv: np.ndarray,
                            assigned: np.ndarray, success: np.ndarray, pos: dict[str, int]) -> dict[str, Any]:
    """Impersonation and evasion summaries (Tables 3-4, Figures 10-11): one row per deep-features
    attack and budget (delta ascending), then CW; each row per setting."""
    from ..evaluation import scenarios as S

    cfg, sc, emb = ctx.cfg, ctx.cfg.scenarios, ctx.features.embedding
    ver = ctx.verification
    vmetric = cfg.recognition.verification_metric
    pool_idx = ctx.split.indices("natural", "test")
    pool_emb, pool_lab = emb[pool_idx], ctx.split.labels("natural", "test")
    pool_ids = np.asarray(ctx.split.image_ids("natural", "test"))
    src_emb_all = emb[ctx.split.indices("source")]
    verification: dict[str, Any] = {}
    df_attacks = sorted({(float(e), str(r)) for r, e in zip(meta["registry"], meta["epsilon"])
                         if S.attack_kind(str(r)) is AttackKind.DEEP_FEATURES})
    row_labels = [(S.attack_label(r, e), S.verification_row_label(r, e)) for e, r in df_attacks] + [("CW", "CW")]
    for scenario in ("impersonation", "evasion"):
        rows_by_label: dict[str, dict[str, Any]] = {}
        for fam_label, key in row_labels:
            for setting in SETTINGS:
                m = (labels == fam_label) & (meta["setting"] == setting)
                if not m.any():
                    continue
                sid = meta["source_id"][m].astype(str)
                res = S.verification_scenario(
                    scenario, source_embeddings=src_emb_all[[pos[s] for s in sid]], adversarial_embeddings=emb_adv[m],
                    source_labels=meta["true_label"][m], assigned=assigned[m], source_ids=sid,
                    pool_embeddings=pool_emb, pool_labels=pool_lab, pool_ids=pool_ids,
                    threshold=float(ver["threshold"]), success=success[m], metric=vmetric, random_state=cfg.seed,
                    bins=sc.bins,
                )
                rows_by_label.setdefault(key, {})[setting] = res
        verification[scenario] = S.verification_summary(scenario, float(ver["threshold"]), rows_by_label, metric=vmetric)
    return verification


def run_scenarios(ctx: RunContext) -> dict[str, Any]:
    """The paper's section 5.3: distances to the assigned template (Figures 6-8), maximum pixel
    perturbation of deep-features adversarials (Figure 9), impersonation and evasion at the
    verification threshold (Tables 3-4, Figures 10-11), deep-features success rates."""
    from ..evaluation import scenarios as S
    from ..evaluation.figures import example_amplification, plot_examples, write_scenario_figures
    from ..evaluation.plots import save_figure

    cfg = ctx.cfg
    sc = cfg.scenarios
    adv_feats, meta = adversarial_table(ctx)
    emb_adv = adv_feats["embedding"]
    ident = ctx.identifier
    templates, classes = np.asarray(ident.templates_, np.float32), np.asarray(ident.classes_)
    emb = ctx.features.embedding
    success = meta["success"].astype(bool)
    assigned = meta["predicted"].astype(np.int64)
    labels = np.array([S.attack_label(r, e) for r, e in zip(meta["registry"], meta["epsilon"])])

    # Figures 6-8: distance of successful adversarials to the template of their assigned class
    nat_idx = ctx.split.indices("natural")
    natural = S.distances_to_assigned(emb[nat_idx], ctx.split.labels("natural"), templates, classes, sc.distance_metric)
    dist = S.distances_to_assigned(emb_adv[success], assigned[success], templates, classes, sc.distance_metric)
    distances = S.distance_summary(dist, labels[success], meta["setting"][success], meta["kind"][success],
                                   natural=natural, metric=sc.distance_metric, bins=sc.bins)

    # Figure 9: maximum pixel perturbation of deep-features adversarials, per delta and setting
    pos, src_pixels = _source_lookup(ctx)
    mpp: dict[str, dict[str, Any]] = {}
    examples: dict[str, Any] = {}
    for kind, run in _attack_runs(ctx):
        for name in run.attack_names:
            idx = run.rows(name)
            rows = {k: v[idx] for k, v in run.table.items()}
            src = src_pixels[[pos[str(i)] for i in rows["source_id"]]].transpose(0, 3, 1, 2).astype(np.float32)
            adv = np.asarray(run.adversarials(name, mmap=False))
            ok = rows["success"].astype(bool)
            setting = Setting.of(rows["targeted"][0])
            if kind is AttackKind.DEEP_FEATURES:
                delta = float(rows["epsilon"][0])
                h = S.MPPHistogram(delta, setting=setting, label=S.delta_label(delta))
                h.update(adv, src, ok)
                mpp[name] = h.summary()
            if cfg.report.examples and ok.any():
                pick = np.flatnonzero(ok)[: cfg.report.examples]
                amp = example_amplification(src[pick], adv[pick])
                fig = plot_examples(src[pick], adv[pick], amplification=amp, max_samples=len(pick),
                                    labels=[str(s) for s in rows["source_id"][pick]],
                                    title=f"{name}: source, adversarial, amplified perturbation")
                path = save_figure(fig, ctx.path("figures", f"examples-{name}.png"))
                examples[name] = {"file": str(path.relative_to(ctx.run_dir)), "title": name,
                                  "caption": f"{name} ({setting}): source, adversarial and the perturbation "
                                             "amplified for visibility" + (f" (x{amp:g})" if amp else "")}

    # Tables 3-4, Figures 10-11: impersonation and evasion (deep features at each delta, and CW)
    verification = _verification_summaries(ctx, meta, labels, emb_adv, assigned, success, pos)

    df = meta["kind"] == AttackKind.DEEP_FEATURES
    rates = S.success_rates(success[df], meta["epsilon"][df], meta["setting"][df]) if df.any() else {}
    figures = write_scenario_figures(ctx.run_dir / "figures", distances=distances, mpp=mpp,
                                     impersonation=verification.get("impersonation"),
                                     evasion=verification.get("evasion"))
    out = {"distances": distances, "mpp": mpp, "verification": verification, "df_success": rates,
           "examples": examples, "figures": {k: str(Path(v).relative_to(ctx.run_dir)) for k, v in figures.items()}}
    write_json(ctx.path("scenarios", "scenarios.json"), out)
    log.info("scenarios: %d adversarials; impersonation/evasion rows %s", int(success.sum()),
             list(verification.get("impersonation", {}).get("rows", {})))
    return {"figures": out["figures"], "examples": len(examples)}


# ---------------------------------------------------------------------------- 10. report
def run_report(ctx: RunContext) -> dict[str, Any]:
    from .peers import add_peers
    from .report import write_report
    from .results import build_results

    results = build_results(ctx)
    results = add_peers(results, ctx.cfg.report.compare_with, ctx.run_dir)  # report.compare_with: peer runs beside
    write_json(ctx.path("results.json"), results)
    paths = write_report(ctx.run_dir)
    log.info("report: %s", paths["html"])
    return {"report": str(paths["html"].relative_to(ctx.run_dir)), "markdown": str(paths["markdown"].relative_to(ctx.run_dir)),
            "tables": list(results["tables"]), "figures": list(results["figures"])}


# ---------------------------------------------------------------------------- 8b. detector benchmark
def _benchmark(ctx: RunContext) -> dict[str, Any]:
    from .benchmark_stage import run_benchmark_stage

    return run_benchmark_stage(ctx)


# ---------------------------------------------------------------------------- 8b'. security (adaptive attacks)
def _security(ctx: RunContext) -> dict[str, Any]:
    from .security_stage import run_security_stage

    return run_security_stage(ctx)


def _benchmark_sections(cfg: ExperimentConfig) -> dict[str, Any]:
    """The benchmark's inputs; with an installed peer library (ART) its version too, so that installing
    it re-runs the benchmark with the peer (runs without one keep their fingerprint)."""
    from ..evaluation.benchmark import peer_versions

    sec = {n: getattr(cfg, n) for n in ("benchmark", "detection", "seed")}
    return {**sec, "peers": peer_versions()} if peer_versions() else sec


# ---------------------------------------------------------------------------- 8c. transfer to further networks
def _run_transfer(ctx: RunContext) -> dict[str, Any]:
    from .transfer import run_transfer

    return run_transfer(ctx)


# ---------------------------------------------------------------------------- the list
def _s(*names: str) -> Callable[[ExperimentConfig], Any]:
    """The config sections a stage reads (they make its input fingerprint)."""
    return lambda cfg: {n: getattr(cfg, n) for n in names}


STAGES: list[Stage] = [
    Stage("data", "data and split", (), _s("seed", "data", "split"), run_data),
    Stage("features", "alignment and features", ("data",), _s("model"), run_features),
    Stage("classifier", "classifier head", ("features",), _s("classifier", "seed"), run_classifier),
    Stage("recognition", "FR templates and verification threshold", ("features",), _s("recognition", "seed"),
          run_recognition),
    Stage("attacks", "classifier attacks", ("classifier",), _s("attacks", "seed"), run_classifier_attacks,
          version=2),
    Stage("deep_features", "deep-features attacks", ("recognition",),
          lambda cfg: {"deep_features": {k: v for k, v in vars(cfg.deep_features).items() if k != "workers"},
                       "quantise": cfg.attacks.quantise, "test_size": cfg.detection.test_size, "seed": cfg.seed},
          run_deep_features, version=2),
    Stage("trajectories", "representatives and trajectories", ("attacks", "deep_features"), _s(), run_trajectories),
    Stage("detectors", "detectors", ("trajectories",), _s("detection", "seed"), run_detectors, small_models=True),
    Stage("benchmark", "detector benchmark (baselines, uint8)", ("detectors",),
          _benchmark_sections, _benchmark, small_models=True),
    Stage("security", "security: detectors against adaptive attacks", ("benchmark",), _s("security", "seed"),
          _security),
    Stage("scenarios", "FR-scenario evaluation", ("trajectories",), _s("scenarios", "report", "seed"), run_scenarios),
    Stage("transfer", "transfer to further networks", ("recognition", "attacks", "deep_features"),
          _s("transfer", "recognition", "seed"), _run_transfer),
    Stage("report", "report", ("detectors", "benchmark", "security", "scenarios", "transfer"),
          lambda cfg: {"report": cfg.report, "name": cfg.name, "description": cfg.description,
                       **({"compare_with": cfg.report.compare_with} if cfg.report.compare_with else {})},
          run_report, version=2),  # 2: results.json records the orderings' counts and the commit; peer runs (compare_with)
]
