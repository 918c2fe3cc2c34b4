"""The ``benchmark`` stage: every detector (the paper's eight, the baselines, frad's fusion)
trained on the same rows, saved as a loadable folder, and evaluated by the same code on
float32 and uint8-rounded adversarials (see :mod:`frad.evaluation.benchmark`).

Writes ``detection/benchmark/`` (``results.json``, ``index.json``, one folder per detector)
and caches the features of the uint8-rounded adversarials it needs under
``trajectories/adversarial_uint8/``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..kinds import AttackKind
from ..utils.io import load_npz, save_npz
from .context import RunContext

__all__ = ["run_benchmark_stage", "uint8_features"]

log = logging.getLogger("frad.run")


def uint8_features(ctx: RunContext, rows_wanted: np.ndarray) -> dict[str, np.ndarray]:
    """Features of the adversarials rounded to 8-bit pixels, for the rows of ``adversarial_table``
    marked in ``rows_wanted`` (others are NaN: using one by mistake fails loudly)."""
    from ..data.features import extract_features
    from .stages import _attack_runs

    parts: dict[str, list[np.ndarray]] = {}
    start = 0
    for kind, run in _attack_runs(ctx):
        for name in run.attack_names:
            n = len(run.rows(name))
            want = rows_wanted[start : start + n]
            start += n
            path = ctx.path("trajectories", "adversarial_uint8", kind, f"{name}.npz")
            z = load_npz(path) if path.is_file() else None
            if z is not None and np.array_equal(z["rows"], np.flatnonzero(want)):
                feats = {t: v for t, v in z.items() if t != "rows"}
            else:
                idx = np.flatnonzero(want)
                feats = {}
                if idx.size:
                    adv = np.asarray(run.adversarials(name, mmap=False))[idx]
                    adv = np.clip(np.round(adv), 0, 255).astype(np.float32)
                    f = extract_features(ctx.model, adv, taps="all", batch_size=ctx.cfg.model.batch_size,
                                         device=ctx.device, cache=False, desc=f"features of {name} (uint8)")
                    feats = dict(f.taps)
                save_npz(path, rows=idx, **feats)
            for t in ctx.model.tap_names:
                full = np.full((n, ctx.model.feature_info[[i.name for i in ctx.model.feature_info].index(t)].channels),
                               np.nan, np.float32)
                if t in feats and feats[t].size:
                    full[want] = feats[t]
                parts.setdefault(t, []).append(full)
    return {t: np.concatenate(v) for t, v in parts.items()}


def run_benchmark_stage(ctx: RunContext) -> dict[str, Any]:
    from ..evaluation.benchmark import run_benchmark
    from ..detection.representatives import ClassRepresentatives
    from .stages import adversarial_table, detector_test_sources

    b = ctx.cfg.benchmark
    if not b.enabled:
        return {"enabled": False}
    d = ctx.cfg.detection
    nat_feats, nat_labels = ctx.role_features("natural")
    adv_feats, adv_meta = adversarial_table(ctx)
    is_df = adv_meta["kind"] == AttackKind.DEEP_FEATURES
    blocks = ctx.model.resolve_taps("blocks")
    taps = [*blocks, "embedding"]
    train_feats, train_labels = ctx.role_features("train")
    # the FR head's validation images: natural, never seen by a detector; they steady the threshold
    val_feats, _ = ctx.role_features("val")
    pred = ctx.head.predict(train_feats["embedding"])
    test_ids = sorted(detector_test_sources(ctx))
    reps = {}
    for kind in ("centroid", "medoid"):
        p = ctx.run_dir / "trajectories" / "representatives" / kind
        if p.with_suffix(".json").is_file():
            reps[kind] = ClassRepresentatives.load(p, device=ctx.device)  # fitted once per run, reused

    u8 = None
    if b.uint8:
        want = (adv_meta["success_quantised"].astype(int) == 1) & np.isin(adv_meta["source_id"].astype(str), test_ids)
        u8 = uint8_features(ctx, want)

    def sel(feats: dict[str, np.ndarray] | None, mask: np.ndarray) -> dict[str, np.ndarray] | None:
        return None if feats is None else {t: feats[t][mask] for t in taps}

    def meta(mask: np.ndarray) -> dict[str, np.ndarray]:
        return {k: adv_meta[k][mask] for k in ("attack", "family", "setting", "source_id", "success",
                                               "success_quantised")}

    m = ctx.cfg.model
    options = dict(m.options)
    if m.weights is not None:
        options["weights"] = m.weights
    face_model = {"name": ctx.model.info.name, "fingerprint": ctx.model.fingerprint(), "registry_name": m.name,
                  "options": options}
    res = run_benchmark(
        {t: nat_feats[t] for t in taps}, {"source_id": np.asarray(ctx.split.image_ids("natural")), "label": nat_labels},
        sel(adv_feats, ~is_df), meta(~is_df), {t: train_feats[t] for t in taps}, train_labels,
        reference_predictions=pred, test_source_ids=np.asarray(test_ids), blocks=blocks, taps=taps,
        representatives=reps, adversarial_uint8=sel(u8, ~is_df),
        deep_features=sel(adv_feats, is_df) if is_df.any() else None,
        deep_meta=meta(is_df) if is_df.any() else None, deep_uint8=sel(u8, is_df) if is_df.any() else None,
        detectors=b.detectors, settings=d.settings, detector_params=d.detector, arch_params=d.arch,
        setting_params=d.setting, validation_size=b.validation_size, fpr=b.fpr, n_bootstrap=d.n_bootstrap,
        random_state=ctx.cfg.seed, device=ctx.device, checkpoint_dir=ctx.run_dir / "detection" / "checkpoints",
        out_dir=ctx.run_dir / "detection" / "benchmark", face_model=face_model,
        threshold_naturals={t: val_feats[t] for t in taps} if len(val_feats[taps[0]]) else None,
    )
    goal = res.get("goal", {})
    best = goal.get("best")
    if best:
        g = goal["detectors"][best]
        log.info("benchmark: best targeted detector %s: macro-AUC %.3f, CW %s, unseen deep features (min) %s; "
                 "chosen for deployment: %s", best, g["macro_auc"],
                 "n/a" if g["cw_auc"] is None else f"{g['cw_auc']:.3f}",
                 "n/a" if g["deep_features_min_auc"] is None else f"{g['deep_features_min_auc']:.3f}", res.get("chosen"))
    return {"detectors": len(res["detectors"]), "chosen": res.get("chosen"), "best_targeted": best,
            "goal_met_by": goal.get("met_by", [])}
