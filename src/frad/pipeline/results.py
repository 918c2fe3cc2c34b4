"""``results.json``: every table and figure of a run in one JSON document.

Gathered from the stages' own outputs (their records, ``detection/results.json`` and
``scenarios/scenarios.json``); the report is then rendered from this document alone (see
:mod:`frad.pipeline.report` for the schema), and scripts can compare runs with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..evaluation import paper
from ..evaluation import scenarios as S
from ..kinds import Setting
from ..utils.io import read_json
from ..utils.revision import source_revision
from .config import config_to_dict
from .context import RunContext
from .presentation import (beside_paper, percent_columns_to_fractions, summary_labels, _face_finding_of, _network,
                           _scale_facts)

__all__ = ["build_results"]

_FIGURES = {
    "figure2": ("Figure 2: ROC of each detector configuration",
                "ROC curves of the eight detector configurations on the test split; top targeted, bottom untargeted."),
    "figure3": ("Figure 3: ROC per attack family, best detector",
                "ROC of the best detector of each setting for each attack family (its variants pooled)."),
    "figure6": ("Figure 6: distance to the assigned class centroid",
                "Distance of the deep features of successful adversarials to the template (centroid) of the class "
                "they are assigned to: classifier attacks vs kNN-guided deep-features attacks; natural images to "
                "their own template for reference."),
    "figure7": ("Figure 7: distance to the assigned centroid, per targeted attack", "Targeted attacks, one by one."),
    "figure8": ("Figure 8: distance to the assigned centroid, per untargeted attack", "Untargeted attacks, one by one."),
    "figure9": ("Figure 9: maximum pixel perturbation (MPP), deep-features attacks",
                "Per pixel, the largest change over R, G, B, in grey levels, of successful targeted deep-features "
                "adversarials, per delta."),
    "figure10": ("Figure 10: impersonation", "Cosine similarity of (x, x-) ('Org') and (x_adv, x-) ('Adv'), x- a natural "
                 "image of the identity the adversarial is assigned to; the line is the verification threshold "
                 "at the EER."),
    "figure11": ("Figure 11: evasion", "Cosine similarity of (x, x+) ('Org') and (x_adv, x+) ('Adv'), x+ another "
                 "natural image of x's identity; the line is the verification threshold at the EER."),
    "figure12": ("Figure 12: ROC of detectors trained on classifier attacks, on deep-features attacks",
                 "Deep-features adversarials crafted from test-split sources only, scored by the detectors of "
                 "Tables 1-2 (generalisation)."),
}


def _record(ctx: RunContext, stage: str) -> dict[str, Any]:
    rec = read_json(ctx.run_dir / "stages" / f"{stage}.json")
    return rec.get("summary") or {}


def _ci_rows(table: dict[str, Any]) -> list[list[Any]]:
    """Detection tables (rows as dicts with a 'ci' map) -> list rows with {value, ci} cells."""
    cols = table["columns"]
    out = []
    for row in table["rows"]:
        ci = row.get("ci") or {}
        cells: list[Any] = [row[cols[0]]]
        for c in cols[1:]:
            v = row.get(c)
            cells.append({"value": v, "ci": ci[c]} if v is not None and ci.get(c) else v)
        out.append(cells)
    return out


def _fr_system(clf: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    ident, ver = rec["identification"], rec["verification"]
    far_key = next((k for k in ver if k.startswith("tar_at_far_")), None)
    rows = [
        ["Classifier head top-1, head-test images", clf.get("test_top1")],
        ["Classifier head top-5, head-test images", clf.get("test_top5")],
        ["Classifier top-1, source images (before attack)", clf.get("source_top1")],
        [f"Identification top-1, natural images vs templates ({ident['metric']})", ident["natural_top1"]],
        [f"Identification top-1, source images vs templates ({ident['metric']})", ident["source_top1"]],
        [f"Verification ROC AUC ({ver['metric']})", ver["auc"]],
        ["Verification EER", ver["eer"]],
        [f"Verification threshold ({ver['threshold_rule']}, {ver['metric']} similarity)", ver["threshold"]],
    ]
    if far_key:
        rows.append([f"TAR at FAR {far_key.removeprefix('tar_at_far_')}", ver[far_key]])
    rows.append(["Verification pairs (genuine / impostor)", f"{ver['genuine_pairs']} / {ver['impostor_pairs']}"])
    rows = [r for r in rows if r[1] is not None]
    # accuracies and rates are fractions printed as percentages, like every rate of the report
    rows = [[r[0], {"value": r[1], "format": "pct1"}] if ("top-" in r[0] or r[0].startswith("TAR") or
                                                          r[0] == "Verification EER") else r for r in rows]
    return {"title": "The face-recognition system", "columns": ["Measure", "Value"], "rows": rows,
            "formats": ["", ".4g"], "paper": paper.paper_table("fr_system"),
            "notes": ["Templates are centroids of head-training embeddings; the verification threshold comes from "
                      "genuine and impostor pairs of head-training and validation images only."]}


def _attack_success(*summaries: dict[str, Any]) -> dict[str, Any]:
    rows = []
    left_notes = []
    for summ, what in zip(summaries, ("classifier attacks", "deep-features attacks")):
        sel = summ.get("selection") or {}
        if sel:
            left_notes.append(f"{what}: {sel.get('attacked', 0)} sources attacked, "
                              f"{sel.get('left_out_misrecognised', 0)} left out because the "
                              f"{sel.get('judged_by', 'system')} already got them wrong before any attack.")
    for summ in summaries:
        for spec in summ.get("attacks", []):
            name = spec["name"]
            r = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summ["success"][name].items()}
            rows.append([name, Setting.of(spec["targeted"]), int(r["n"]), r["success"],
                         r["success_quantised"], r["l2"], r["linf"], r["iterations"]])
    return {"title": "Attack success rates", "columns": ["Attack", "Setting", "Sources", "Success (float32)",
                                                          "Success (uint8)", "Mean L2", "Mean L-inf", "Mean iterations"],
            "rows": rows, "formats": ["", "", "d", "pct1", "pct1", ".1f", ".2f", ".1f"],
            "notes": ["Norms in grey levels (pixels in [0, 255]), over successful adversarials. 'uint8': the "
                      "adversarial rounded to 8-bit pixels, as a saved image carries it, and judged again.",
                      *left_notes]}


def _orderings(check: dict[str, Any]) -> dict[str, Any]:
    rows = []
    labels = {"cw_hardest": "CW is the hardest family to detect",
              "untargeted_harder": "Untargeted attacks are harder to detect than targeted",
              "lstm_ahead_of_mlp": "LSTM detectors are ahead of MLP detectors"}
    for key, label in labels.items():
        v = check.get(key) or {}
        holds = v.get("holds")
        if holds is None:
            verdict = "n/a"
        elif holds:
            verdict = "yes"
        else:
            verdict = "partly" if v.get("count") else "no"
        rows.append([label, verdict, v.get("detail") or ""])
    best = check.get("best_targeted_macro_auc") or {}
    if best.get("value") is not None:
        rows.append([f"Best targeted macro-AUC >= {best.get('target', 0.9)}",
                     "yes" if best.get("meets_target") else "no",
                     f"{best['value']:.3f} ({best.get('configuration')})"])
    return {"title": "Do the paper's orderings hold here?", "columns": ["Claim (the paper)", "Holds", "Detail"],
            "rows": rows}


def _benchmark_goal(bench: dict[str, Any]) -> dict[str, Any]:
    from ..evaluation.benchmark import DETECTOR_TITLES

    g = bench.get("goal") or {}
    t = g.get("targets", {})
    rows = [[DETECTOR_TITLES.get(n, n), v["macro_auc"], v["cw_auc"], v["deep_features_min_auc"],
             "yes" if v["meets"] else "no"] for n, v in (g.get("detectors") or {}).items()]
    return {"title": "Goal for frad's best detector (targeted): macro-AUC >= {:.2f}, CW >= {:.2f}, unseen "
                     "deep-features attacks >= {:.2f}".format(t.get("targeted_macro_auc", 0.95), t.get("cw_auc", 0.85),
                                                              t.get("deep_features_auc", 0.9)),
            "columns": ["Detector", "Targeted macro-AUC", "CW AUC", "Lowest deep-features AUC", "Meets the goal"],
            "rows": rows, "formats": ["", ".3f", ".3f", ".3f", ""],
            "notes": [f"Chosen for deployment (`frad detect`, best validation macro-AUC): {bench.get('chosen')}."]}


def _benchmark_summary(bench: dict[str, Any] | None) -> dict[str, Any]:
    if not bench:
        return {}
    g = bench.get("goal") or {}
    best = g.get("best")
    out: dict[str, Any] = {"deployed_detector": bench.get("chosen")}
    if best:
        v = g["detectors"][best]
        out.update(benchmark_best_targeted=best, benchmark_best_targeted_macro_auc=v["macro_auc"],
                   benchmark_best_targeted_cw_auc=v["cw_auc"],
                   benchmark_best_targeted_deep_features_min_auc=v["deep_features_min_auc"])
    return out


def build_results(ctx: RunContext) -> dict[str, Any]:
    """The run's results.json document (see :mod:`frad.pipeline.report`).

    Long because: the sections of results.json in the order of its schema, each a few lines reading
    one stage's output into the same document.
    """
    cfg = ctx.cfg
    data, clf, recog = _record(ctx, "data"), _record(ctx, "classifier"), _record(ctx, "recognition")
    attacks, dfs = _record(ctx, "attacks"), _record(ctx, "deep_features")
    det = read_json(ctx.run_dir / "detection" / "results.json")
    scen = read_json(ctx.run_dir / "scenarios" / "scenarios.json")
    det_figs = _record(ctx, "detectors").get("figures", {})

    tables: dict[str, Any] = {"fr_system": _fr_system(clf, recog), "attack_success": _attack_success(attacks, dfs)}
    for tid, setting in (("table1", Setting.TARGETED), ("table2", Setting.UNTARGETED)):
        t = det["tables"].get(setting)
        if t:
            tables[tid] = beside_paper(
                {"title": f"Table {tid[-1]}: AUC per {setting} attack family", "columns": t["columns"],
                 "rows": _ci_rows(t), "formats": ["", *[".3f"] * (len(t["columns"]) - 1)],
                 "notes": ["Each family pools its epsilon and iteration variants against all natural test "
                           "images; Macro-AUC is the mean over families; [95% bootstrap interval]."]},
                paper.paper_table(tid))
    ver = scen.get("verification", {})
    for tid, scenario in (("table3", "impersonation"), ("table4", "evasion")):
        if ver.get(scenario, {}).get("rows"):
            tables[tid] = S.verification_table(ver[scenario])
    for tid, setting in (("table5", Setting.TARGETED), ("table6", Setting.UNTARGETED)):
        g = det.get("generalisation", {}).get(setting)
        if g and g.get("rows"):
            tables[tid] = {"title": g.get("title") or f"AUC on {setting} deep-features attacks",
                           "columns": g["columns"], "rows": _ci_rows(g),
                           "formats": ["", *[".3f"] * (len(g["columns"]) - 1)],
                           "paper": paper.paper_table(tid, layout="wide"),
                           "notes": ["Detectors trained on classifier attacks (Tables 1-2), scored on deep-features "
                                     "adversarials crafted from test-split sources only."]}
    if scen.get("df_success"):
        tables["df_success"] = S.df_success_table(scen["df_success"])
    if scen.get("mpp"):
        tables["mpp"] = S.mpp_table(scen["mpp"])
    # one unit per quantity: every rate and share in results.json is a fraction (the report prints %)
    for tid in ("table3", "table4", "df_success", "mpp"):
        if tid in tables:
            percent_columns_to_fractions(tables[tid])
    if scen.get("distances"):
        tables["distances"] = S.distance_table(scen["distances"])
    for setting, t in det.get("eer_tables", {}).items():
        tables[f"detector_eer_{setting}"] = {"title": t["title"], "columns": t["columns"],
                                             "rows": [[r[c] for c in t["columns"]] for r in t["rows"]],
                                             "formats": ["", "pct1", ".3f", "pct1"]}
    tables["orderings"] = _orderings(det.get("orderings", {}))
    bench_path = ctx.run_dir / "detection" / "benchmark" / "results.json"
    bench = read_json(bench_path) if bench_path.is_file() else None
    if bench:  # the detector benchmark (frad.evaluation.benchmark): every detector beside the baselines
        tables.update(bench.get("tables", {}))
        tables["benchmark_goal"] = _benchmark_goal(bench)
    from .transfer import transfer_tables

    tables.update(transfer_tables(ctx))
    from .security_report import read_security, security_figures, security_summary, security_tables

    security = read_security(ctx.run_dir)
    tables.update(security_tables(security))

    figures: dict[str, Any] = {}
    data_for = {
        "figure2": {"classifier": det.get("curves", {}).get("classifier")},
        "figure3": {"classifier": det.get("curves", {}).get("classifier")},
        "figure12": {"generalisation": det.get("curves", {}).get("generalisation")},
        "figure6": {"groups": scen.get("distances", {}).get("groups"), "bin_edges": scen.get("distances", {}).get("bin_edges")},
        "figure7": {"attacks": (scen.get("distances", {}).get("attacks") or {}).get(Setting.TARGETED)},
        "figure8": {"attacks": (scen.get("distances", {}).get("attacks") or {}).get(Setting.UNTARGETED)},
        "figure9": scen.get("mpp"),
        "figure10": ver.get("impersonation"),
        "figure11": ver.get("evasion"),
    }
    for fid, path in {**det_figs, **scen.get("figures", {})}.items():
        title, caption = _FIGURES.get(fid, (fid, ""))
        rel = str(path)
        if rel.startswith(str(ctx.run_dir)):
            rel = str(Path(rel).relative_to(ctx.run_dir))
        figures[fid] = {"title": title, "file": rel, "caption": caption, "data": data_for.get(fid)}
    figures.update(security_figures(security))
    sec_summary, sec_labels = security_summary(security)

    stages = {}
    for name in ("data", "features", "classifier", "recognition", "attacks", "deep_features", "trajectories",
                 "detectors", "benchmark", "security", "scenarios", "transfer", "report"):
        p = ctx.run_dir / "stages" / f"{name}.json"
        if p.is_file():
            r = read_json(p)
            stages[name] = {"seconds": r.get("seconds"), "status": r.get("status") if name != "report" else "done",
                            "skipped": name in ctx.skipped, "title": r.get("title")}
    best = (det.get("orderings") or {}).get("best_targeted_macro_auc") or {}
    demo = cfg.report.demo
    ds = data.get("dataset", {})
    note = cfg.report.note
    feats = _record(ctx, "features")
    warnings = [w for st in ("data", "features", "recognition", "attacks", "deep_features", "trajectories", "security")
                for w in (_record(ctx, st).get("warnings") or [])]
    return {
        "frad_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commit": source_revision(),  # the frad checkout's commit, when there is one (peer reports name it)
        "title": cfg.report.title or f"frad run: {cfg.name}",
        "run": {"name": cfg.name, "description": cfg.description, "config_file": "config.yaml",
                "config": config_to_dict(cfg)},
        "dataset": {"name": ds.get("name"), "variant": ds.get("variant"), "synthetic": bool(ds.get("synthetic")),
                    "identities": data.get("identities"), "images": data.get("images"), "split": data.get("split"),
                    "model": feats.get("model"), "path": cfg.data.path,
                    "dropped_identities": data.get("dropped_identities"), "dropped_images": data.get("dropped_images"),
                    "images_needed_per_identity": data.get("images_needed_per_identity"),
                    "face_finding": feats.get("face_finding") or _face_finding_of(feats)},
        "network": _network(cfg, feats),
        "scale": {"demo": bool(demo), "note": note, "facts": _scale_facts(data, attacks, dfs)},
        "warnings": warnings,
        "stages": stages,
        "tables": tables,
        "figures": figures,
        "examples": scen.get("examples", {}),
        "summary": {
            "head_top1": clf.get("test_top1"),
            "identification_top1": recog["identification"]["natural_top1"],
            "verification_auc": recog["verification"]["auc"],
            "verification_threshold": recog["verification"]["threshold"],
            "best_targeted_macro_auc": best.get("value"),
            "best_targeted_configuration": best.get("configuration"),
            **{f"deep_features_success_{s}_delta{v['delta']:g}": (None if v["rate_pct"] is None else v["rate_pct"] / 100)
               for s, d in (scen.get("df_success") or {}).items() for k, v in d.items()},
            **_benchmark_summary(bench),
            **sec_summary,
            "classifier_adversarials": int(np.sum([r.get("n", 0) for r in attacks.get("success", {}).values()])),
            "sources_left_out": int((attacks.get("selection") or {}).get("left_out_misrecognised", 0)),
        },
        "summary_labels": {**summary_labels(scen.get("df_success") or {}), **sec_labels},
        "orderings": det.get("orderings") or {},  # check_orderings' counts, for reports that compare runs
    }
