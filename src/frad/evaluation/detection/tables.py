"""The detection results as the paper's tables: AUC per attack family and configuration
(Tables 1 and 2), on unseen deep-features attacks (Tables 5 and 6), and the EER per
configuration; ``best_configuration`` picks a setting's best detector by macro-AUC.

Rows are mappings (``Configuration``, ``key``, one entry per column, ``ci`` for the
bootstrap intervals), in the configurations' order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import DataError
from ...kinds import Setting
from .configurations import DetectorConfig
from .scores import ordered

__all__ = ["MACRO", "detection_tables", "eer_tables", "generalisation_table", "best_configuration"]

MACRO = "Macro-AUC"

_TABLE_TITLES = {
    Setting.TARGETED: "Table 1: AUC per targeted attack family",
    Setting.UNTARGETED: "Table 2: AUC per untargeted attack family",
}
_GEN_TITLES = {
    Setting.TARGETED: "Table 5: AUC on targeted deep-features attacks (detectors trained on classifier attacks)",
    Setting.UNTARGETED: "Table 6: AUC on untargeted deep-features attacks (detectors trained on classifier attacks)",
}


def _row_value(v: float | None) -> float | None:
    """A table cell: the number as a float, or None where there is none."""
    return None if v is None else float(v)


def detection_tables(results: Mapping[str, Any], configs: Sequence[DetectorConfig], order: Sequence[str]) -> dict[str, Any]:
    """Per setting, the AUC of every family (in ``order``) and the macro-AUC, per configuration."""
    tables: dict[str, Any] = {}
    for s, dets in results["detectors"].items():
        fams = ordered([f for ev in dets.values() for f in ev["families"]], order)
        rows = []
        for c in configs:
            ev = dets[c.key]
            row: dict[str, Any] = {"Configuration": c.label, "key": c.key}
            ci: dict[str, Any] = {}
            for f in fams:
                row[f] = _row_value(ev["families"].get(f, {}).get("auc"))
                ci[f] = ev["families"].get(f, {}).get("auc_ci")
            row[MACRO] = ev["macro_auc"]
            ci[MACRO] = ev["macro_auc_ci"]
            row["ci"] = ci
            rows.append(row)
        tables[s] = {"title": _TABLE_TITLES.get(s, f"AUC per {s} attack family"),
                     "columns": ["Configuration", *fams, MACRO], "rows": rows}
    return tables


def eer_tables(results: Mapping[str, Any], configs: Sequence[DetectorConfig]) -> dict[str, Any]:
    """Per setting and configuration: EER, its threshold and the accuracy there, all adversarials pooled."""
    tables: dict[str, Any] = {}
    cols = ["Configuration", "EER", "EER threshold (probability)", "Accuracy at EER"]
    for s, dets in results["detectors"].items():
        rows = []
        for c in configs:
            p = dets[c.key]["pooled"]
            rows.append({"Configuration": c.label, "key": c.key, "EER": p["eer"],
                         "EER threshold (probability)": p["eer_threshold_probability"],
                         "Accuracy at EER": p["accuracy_at_eer"]})
        tables[s] = {"title": f"EER and accuracy at the EER threshold, {s} attacks pooled", "columns": cols,
                     "rows": rows}
    return tables


def generalisation_table(detail: Mapping[str, Any], configs: Sequence[DetectorConfig], setting: str) -> dict[str, Any]:
    """Table 5 / 6 for one setting: per configuration, the AUC on each deep-features attack."""
    attacks = ordered([a for ev in detail.values() for a in ev["families"]], ())
    rows = []
    for c in configs:
        if c.key not in detail:
            continue
        ev = detail[c.key]
        row: dict[str, Any] = {"Configuration": c.label, "key": c.key}
        for a in attacks:
            row[a] = _row_value(ev["families"].get(a, {}).get("auc"))
        row["ci"] = {a: ev["families"].get(a, {}).get("auc_ci") for a in attacks}
        rows.append(row)
    return {"title": _GEN_TITLES.get(setting, f"AUC on {setting} deep-features attacks"),
            "columns": ["Configuration", *attacks], "rows": rows}


def best_configuration(results: Mapping[str, Any], setting: str) -> str:
    """The key of the configuration with the highest macro-AUC in ``setting``."""
    dets = results["detectors"].get(setting)
    if not dets:
        raise DataError(f"no detector results for setting {setting!r}")
    return max(dets, key=lambda k: dets[k]["macro_auc"])

