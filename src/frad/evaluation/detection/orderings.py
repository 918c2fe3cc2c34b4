"""Whether the paper's orderings hold in a detection experiment's results.

The paper finds CW the hardest family to detect, untargeted attacks harder to detect than
targeted ones, and the LSTM ahead of the MLP; :func:`check_orderings` counts, comparison by
comparison, how often each holds, and reports the best targeted macro-AUC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...kinds import Setting
from .configurations import DetectorConfig

__all__ = ["check_orderings"]


def _verdict(count: int, total: int, what: str) -> dict[str, Any]:
    return {"holds": bool(total > 0 and count == total), "count": count, "total": total,
            "detail": f"{what} in {count} of {total} comparisons"}


def _hardest_family(dets: Mapping[str, Mapping[str, Any]], hardest: str) -> dict[str, Any]:
    """Per (setting, configuration): does ``hardest`` have the lowest AUC?  And on average per setting."""
    count = total = 0
    avg_ok: list[bool] = []
    per_setting: dict[str, Any] = {}
    for s, by_cfg in dets.items():
        fam_aucs: dict[str, list[float]] = {}
        for ev in by_cfg.values():
            fams = ev["families"]
            for f, m in fams.items():
                fam_aucs.setdefault(f, []).append(m["auc"])
            if hardest in fams and len(fams) > 1:
                total += 1
                lowest = all(fams[hardest]["auc"] < m["auc"] for f, m in fams.items() if f != hardest)
                count += int(lowest)
        if hardest in fam_aucs and len(fam_aucs) > 1:
            means = {f: float(np.mean(v)) for f, v in fam_aucs.items()}
            ok = all(means[hardest] < v for f, v in means.items() if f != hardest)
            avg_ok.append(ok)
            per_setting[s] = {"mean_auc": means, "holds": ok}
    v = _verdict(count, total, f"{hardest} had the lowest AUC")
    v["holds_on_average"] = bool(avg_ok) and all(avg_ok)
    v["per_setting"] = per_setting
    if total == 0:
        v.update(holds=None, holds_on_average=None, detail=f"no {hardest} results to compare")
    return v


def _untargeted_harder(t: Mapping[str, Any], u: Mapping[str, Any]) -> dict[str, Any]:
    """Per configuration: is the untargeted macro-AUC below the targeted one?"""
    common = [k for k in t if k in u]
    count = sum(int(u[k]["macro_auc"] < t[k]["macro_auc"]) for k in common)
    v = _verdict(count, len(common), "the untargeted macro-AUC was below the targeted one")
    if common:
        mt = float(np.mean([t[k]["macro_auc"] for k in common]))
        mu = float(np.mean([u[k]["macro_auc"] for k in common]))
        v.update(holds_on_average=mu < mt, mean_targeted=mt, mean_untargeted=mu)
    else:
        v.update(holds=None, holds_on_average=None, detail="needs both targeted and untargeted results")
    return v


def _lstm_ahead_of_mlp(dets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per (setting, representative, metric): is the LSTM's macro-AUC above the MLP's?"""
    count = total = 0
    avg_ok = []
    for by_cfg in dets.values():
        lstm_vals, mlp_vals = [], []
        for k, ev in by_cfg.items():
            c = DetectorConfig.parse(k)
            if c.arch != "lstm":
                continue
            other = DetectorConfig("mlp", c.representative, c.metric).key
            if other in by_cfg:
                total += 1
                count += int(ev["macro_auc"] > by_cfg[other]["macro_auc"])
                lstm_vals.append(ev["macro_auc"])
                mlp_vals.append(by_cfg[other]["macro_auc"])
        if lstm_vals:
            avg_ok.append(float(np.mean(lstm_vals)) > float(np.mean(mlp_vals)))
    v = _verdict(count, total, "the LSTM's macro-AUC was above the matching MLP's")
    v["holds_on_average"] = bool(avg_ok) and all(avg_ok)
    if total == 0:
        v.update(holds=None, holds_on_average=None, detail="needs matching LSTM and MLP configurations")
    return v


def _best_targeted(t: Mapping[str, Any], target: float) -> dict[str, Any] | None:
    if not t:
        return None
    k = max(t, key=lambda key: t[key]["macro_auc"])
    val = float(t[k]["macro_auc"])
    return {"value": val, "configuration": k, "target": target, "meets_target": val >= target}


def check_orderings(
    results: Mapping[str, Any], *, hardest_family: str = "CW", target_macro_auc: float = 0.90
) -> dict[str, Any]:
    """Whether the paper's orderings hold in ``results`` (from ``run_detection_experiment``).

    - ``cw_hardest``: in each (setting, configuration), ``hardest_family`` has the lowest AUC;
      ``holds_on_average`` compares family AUCs averaged over configurations, per setting.
    - ``untargeted_harder``: per configuration, untargeted macro-AUC < targeted macro-AUC.
    - ``lstm_ahead_of_mlp``: per (setting, representative, metric), LSTM macro > MLP macro;
      ``holds_on_average`` compares the architectures' mean macro-AUCs per setting.
    - ``best_targeted_macro_auc``: the best targeted configuration, and whether it reaches
      ``target_macro_auc`` (the issue's 0.90 on LFW with dlib).
    "holds" means every comparison goes the paper's way; counts say how many did.
    """
    dets: Mapping[str, Mapping[str, Any]] = results.get("detectors", {})
    t, u = dets.get(Setting.TARGETED, {}), dets.get(Setting.UNTARGETED, {})
    return {
        "cw_hardest": _hardest_family(dets, hardest_family),
        "untargeted_harder": _untargeted_harder(t, u),
        "lstm_ahead_of_mlp": _lstm_ahead_of_mlp(dets),
        "best_targeted_macro_auc": _best_targeted(t, target_macro_auc),
    }
