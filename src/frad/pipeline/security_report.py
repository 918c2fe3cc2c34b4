"""How a run presents its security evaluation (``security/results.json`` of the ``security`` stage):
the report's tables, the curve figure, the headline numbers of ``results.json``'s summary,
and one plain sentence per detector.  Pure functions over that document, plus the plot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..utils.io import read_json

__all__ = ["security_tables", "security_figures", "security_summary", "security_sentences", "plot_security_curve",
           "read_security"]

_GOAL = {"targeted": "T", "untargeted": "UT"}


def read_security(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``<run>/security/results.json``, or None when the stage did not run."""
    p = Path(run_dir) / "security" / "results.json"
    return read_json(p) if p.is_file() else None


def _attack_label(res: Mapping[str, Any], attack: str) -> str:
    from .security_stage import ATTACK_TITLES

    a = res.get("attacks", {}).get(attack, {})
    if attack == "bim":
        return f"BIM (ε = {a.get('epsilon', 0):g}, {a.get('steps')} steps)"
    if attack == "cw_l2":
        return f"CW-L2 ({a.get('binary_search_steps')} x {a.get('steps')} steps)"
    if attack == "deep_features":
        return f"DF (δ = {a.get('delta', 0):g}, λ = {a.get('lambda', 0):g})"
    return ATTACK_TITLES.get(attack, attack)


def _detector_label(res: Mapping[str, Any], d: str) -> str:
    from .security_stage import ROLES

    info = res["detectors"][d]
    roles = [ROLES[r] for r in info.get("roles", []) if r in ROLES]
    return info.get("title", d) + (f" [{'; '.join(roles)}]" if roles else "")


def _nan(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def pooled(res: Mapping[str, Any], d: str, rounding: str = "float32") -> dict[str, float | None]:
    """The detector's share that gets through, pooled over the table's attacks and settings."""
    from .security_stage import pooled_through

    return {k: _nan(v) for k, v in pooled_through(res, d, rounding).items()}


def security_sentences(res: Mapping[str, Any]) -> list[str]:
    """One plain sentence per detector: what share gets through undetected, non-adaptive vs adaptive."""
    pct = f"{100 * float(res.get('fpr', 0.05)):.0f}%"
    out = []
    for d, info in res["detectors"].items():
        p = pooled(res, d)
        q = pooled(res, d, "uint8")
        na, ad = p["non_adaptive"], p["adaptive"]
        if na is None or ad is None:
            continue
        how = ("attacked through BPDA (a differentiable stand-in for its non-differentiable score)"
               if info.get("bpda") else f"attacked through its own gradient ({info.get('gradient')})")
        out.append(f"{_detector_label(res, d)}: at {pct} false positives, {100 * na:.1f}% of the attacks get through "
                   f"undetected when the attacker ignores the detector, {100 * ad:.1f}% when the attacker knows it "
                   f"({how}), {100 * (p['either'] or 0):.1f}% when it keeps whichever of the two gets through; "
                   f"rounded to uint8: {100 * (q['non_adaptive'] or 0):.1f}%, {100 * (q['adaptive'] or 0):.1f}% and "
                   f"{100 * (q['either'] or 0):.1f}%.")
    bpda = [res["detectors"][d].get("title", d) for d, i in res["detectors"].items() if i.get("bpda")]
    out.append("Attacked through BPDA: " + (", ".join(bpda) if bpda else "none of these detectors (every one has an "
                                                                           "exact gradient almost everywhere)") + ".")
    return out


def security_tables(res: Mapping[str, Any] | None) -> dict[str, Any]:
    """The report's security tables: the per-detector verdict, then every cell (float32, uint8)."""
    if not res or not res.get("rows"):
        return {}
    pct = f"{100 * float(res.get('fpr', 0.05)):.0f}%"
    n = res["sources"]["attacked"]
    settings = res.get("settings", [])
    verdict_rows = []
    for d, info in res["detectors"].items():
        p, q = pooled(res, d), pooled(res, d, "uint8")
        flagged = ", ".join(f"{_GOAL.get(g, g)} {100 * v:.1f}%" for g, v in info.get("natural_flagged", {}).items())
        verdict_rows.append([_detector_label(res, d), "BPDA" if info.get("bpda") else "exact (own gradient)",
                             p["non_adaptive"], p["adaptive"], p["either"], q["non_adaptive"], q["adaptive"],
                             q["either"], flagged])
    verdict = {
        "title": f"Security: share of attacks that get through undetected at {pct} false positives, "
                 "attacker ignoring vs knowing the detector",
        "columns": ["Detector", "Gradient used by the adaptive attack", "Non-adaptive (float32)", "Adaptive (float32)",
                    "Either (float32)", "Non-adaptive (uint8)", "Adaptive (uint8)", "Either (uint8)",
                    "Naturals flagged (held-out)"],
        "rows": verdict_rows, "formats": ["", "", "pct1", "pct1", "pct1", "pct1", "pct1", "pct1", ""],
        "notes": [*security_sentences(res),
                  f"Gets through = fools the FR system (targeted: reaches the target; untargeted: any other identity) "
                  f"and is not flagged at the threshold that flags {pct} of {res.get('naturals')} held-out natural "
                  f"images; a failed attack counts as stopped. Pooled over "
                  f"{', '.join(_attack_label(res, a) for a in res.get('attack_order', []))}, "
                  f"{' and '.join(settings)}; {n} source images each (test-split sources no detector trained on). "
                  "Either: per source, the adaptive or the plain adversarial, whichever gets through (an attacker who "
                  "knows the detector can check both); an adaptive share below the non-adaptive one means the "
                  "adaptive attack, at this budget, was weaker than ignoring the detector.",
                  *res.get("notes", [])],
    }
    tables = {"security": verdict}
    for rounding in ("float32", "uint8"):
        rows = []
        for r in (x for x in res["rows"] if x["rounding"] == rounding):
            rows.append([_detector_label(res, r["detector"]), _attack_label(res, r["attack"]), r["goal"],
                         r["non_adaptive_through"], r["adaptive_through"], r.get("either_through"),
                         _nan(r["adaptive_fooled"]),
                         _nan(r["non_adaptive_auc"]), _nan(r["adaptive_auc"]), _nan(r["non_adaptive_median_l2"]),
                         _nan(r["adaptive_median_l2"]), _nan(r["non_adaptive_median_linf"]),
                         _nan(r["adaptive_median_linf"])])
        what = "float32 adversarials" if rounding == "float32" else "adversarials rounded to uint8 (a saved image)"
        tables[f"security_{rounding}"] = {
            "title": f"Security per attack ({what}): non-adaptive (NA) vs adaptive (A)",
            "columns": ["Detector", "Attack", "Setting", "Through NA", "Through A", "Through either", "FR fooled A",
                        "AUC NA", "AUC A", "Median L2 NA", "Median L2 A", "Median L-inf NA", "Median L-inf A"],
            "rows": rows, "formats": ["", "", "", "pct1", "pct1", "pct1", "pct1", ".3f", ".3f", ".0f", ".0f", ".2f",
                                      ".2f"],
            "notes": [f"Through: share of the {n} sources whose adversarial fools the FR system and is not flagged at "
                      f"{pct} FPR. AUC: the detector's ROC AUC between the held-out naturals and the adversarials "
                      "that fool the FR system (n/a: none does). Norms in grey levels (pixels in [0, 255]), medians "
                      "over the adversarials that fool the FR system. Untargeted adaptive BIM / CW: per source the "
                      "better of the run with the 'not flagged' criterion and the run targeted at the runner-up "
                      "identity. DF: the FR system is the template k-NN; the adaptive run adds λ x the detector's "
                      "loss and stops only where the k-NN is fooled and the detector does not flag."],
        }
    return tables


def security_figures(res: Mapping[str, Any] | None) -> dict[str, Any]:
    if not res or not res.get("figure"):
        return {}
    pct = f"{100 * float(res.get('fpr', 0.05)):.0f}%"
    return {"security_curve": {
        "title": f"Security: share that gets through undetected at {pct} FPR against the BIM budget",
        "file": res["figure"],
        "caption": f"BIM ({res.get('curve_steps')} steps) at each L-inf budget ε (grey levels = 255 ε): share of "
                   f"{res['sources']['attacked']} sources whose adversarial fools the classifier and is not flagged; "
                   "solid: the attacker knows the detector (adaptive), dashed: it ignores it (non-adaptive). "
                   "float32 adversarials; the uint8 points are in results.json.",
        "data": {"curve": res.get("curve")},
    }}


def security_summary(res: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(summary entries, their labels) for ``results.json``: per detector the pooled share that
    gets through, non-adaptive and adaptive (float32)."""
    if not res or not res.get("rows"):
        return {}, {}
    pct = f"{100 * float(res.get('fpr', 0.05)):.0f}%"
    values: dict[str, Any] = {}
    labels: dict[str, list[str]] = {}
    for d, info in res["detectors"].items():
        p = pooled(res, d)
        for k, word in (("non_adaptive", "non-adaptive"), ("adaptive", "adaptive")):  # "either" is in the tables
            key = f"security_{d}_through_{k}"
            values[key] = p[k]
            labels[key] = [f"Security: {info.get('title', d)}, share through undetected at {pct} FPR, {word}"
                           + (" (BPDA)" if k == "adaptive" and info.get("bpda") else ""), "pct1"]
    return values, labels


def plot_security_curve(res: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """The share that gets through against the BIM budget, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluation.plots import save_figure

    rows = [r for r in res["curve"] if r["rounding"] == "float32"]
    goals = [g for g in ("targeted", "untargeted") if any(r["goal"] == g for r in rows)]
    fig, axes = plt.subplots(1, len(goals), figsize=(5.5 * len(goals), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, g in zip(axes[0], goals):
        for i, d in enumerate(res["detectors"]):
            rs = sorted((r for r in rows if r["goal"] == g and r["detector"] == d), key=lambda r: r["budget"])
            if not rs:
                continue
            x = [255 * r["budget"] for r in rs]
            c = colours[i % len(colours)]
            title = res["detectors"][d].get("title", d)
            ax.plot(x, [100 * r["adaptive_through"] for r in rs], "-o", color=c, label=f"{title}: adaptive")
            ax.plot(x, [100 * r["non_adaptive_through"] for r in rs], "--s", color=c, alpha=0.7,
                    label=f"{title}: non-adaptive")
        ax.set_xlabel("BIM budget ε (grey levels)")
        ax.set_ylabel("gets through undetected (% of sources)")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{g} BIM")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
