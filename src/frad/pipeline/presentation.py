"""How ``results.json`` presents a run: the paper's values beside the run's in the paper's order,
one unit per quantity (rates and shares as fractions; the report prints them as percentages),
labelled headline numbers, the network and the facts a demo banner states.

Pure functions over the stages' JSON summaries; :mod:`frad.pipeline.results` calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .checks import face_finding

__all__ = ["beside_paper", "percent_columns_to_fractions", "summary_labels", "SUMMARY_LABELS"]

PAPER_SUFFIX = " (paper)"

#: Headline numbers of ``results.json``'s summary: key -> (label, report format).
SUMMARY_LABELS: dict[str, tuple[str, str]] = {
    "head_top1": ("Classifier head top-1 accuracy, head-test images", "pct1"),
    "identification_top1": ("Identification top-1 accuracy, natural images", "pct1"),
    "verification_auc": ("Verification ROC AUC", ".3f"),
    "verification_threshold": ("Verification threshold (similarity at the EER)", ".3f"),
    "best_targeted_macro_auc": ("Best detector, targeted macro-AUC", ".3f"),
    "best_targeted_configuration": ("Best detector configuration (targeted)", ""),
    "classifier_adversarials": ("Classifier-attack adversarials crafted", "d"),
    "sources_left_out": ("Sources left out (already misrecognised)", "d"),
    "deployed_detector": ("Detector chosen for deployment (frad detect, frad serve)", ""),
    "benchmark_best_targeted": ("Detector benchmark: best detector (targeted)", ""),
    "benchmark_best_targeted_macro_auc": ("Detector benchmark: its targeted macro-AUC", ".3f"),
    "benchmark_best_targeted_cw_auc": ("Detector benchmark: its CW AUC", ".3f"),
    "benchmark_best_targeted_deep_features_min_auc": ("Detector benchmark: its lowest AUC on unseen deep-features attacks", ".3f"),
}


def summary_labels(df_success: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Label and format of every summary key, the deep-features success rates included."""
    out = {k: list(v) for k, v in SUMMARY_LABELS.items()}
    for s, by_delta in df_success.items():
        for v in by_delta.values():
            out[f"deep_features_success_{s}_delta{v['delta']:g}"] = [
                f"Deep-features attack success, {s}, δ = {v['delta']:g}", "pct1"]
    return out


def _fraction(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v) / 100.0
    if isinstance(v, Mapping) and "value" in v:
        return {**v, "value": _fraction(v["value"]), **({"ci": [_fraction(c) for c in v["ci"]]} if v.get("ci") else {})}
    return v


_PERCENT_COLUMNS = {"Targeted", "Untargeted", "Targeted Original", "Targeted Adversarial", "Untargeted Original",
                    "Untargeted Adversarial"}


def percent_columns_to_fractions(table: dict[str, Any]) -> dict[str, Any]:
    """Turn a table's percentage columns (0-100) into fractions printed as percentages, in place;
    its ``paper`` entry too, so the two read alike."""
    for t in (table, table.get("paper")):
        if not t:
            continue
        cols = list(t.get("columns") or [])
        fmts = list(t.get("formats") or [""] * len(cols))
        idx = [i for i, c in enumerate(cols) if c in _PERCENT_COLUMNS]
        for i in idx:
            fmts[i] = "pct1"
        t["formats"] = fmts
        t["rows"] = [[_fraction(c) if i in idx else c for i, c in enumerate(r)] if isinstance(r, list) else r
                     for r in t.get("rows") or []]
    return table


def beside_paper(run: dict[str, Any], paper: dict[str, Any] | None) -> dict[str, Any]:
    """A run's table with the paper's values in the column beside each of its own, rows and
    columns in the paper's order (what the run has beyond the paper follows)."""
    if not paper:
        return run
    rcols, pcols = list(run["columns"]), list(paper["columns"])
    key = rcols[0]
    fmt = dict(zip(rcols, run.get("formats") or [""] * len(rcols)))
    pfmt = dict(zip(pcols, paper.get("formats") or [""] * len(pcols)))
    order = [c for c in pcols[1:] if c in rcols] + [c for c in rcols[1:] if c not in pcols]
    prows = {str(r[0]): dict(zip(pcols, r)) for r in paper["rows"]}
    rrows = {str(r[0]): dict(zip(rcols, r)) for r in run["rows"]}
    labels = [k for k in prows if k in rrows] + [k for k in rrows if k not in prows]
    columns, formats = [key], [""]
    for c in order:
        columns.append(c)
        formats.append(fmt.get(c, ""))
        if c in pcols:
            columns.append(c + PAPER_SUFFIX)
            formats.append(pfmt.get(c, ""))
    rows = []
    for label in labels:
        r, p = rrows[label], prows.get(label, {})
        row: list[Any] = [label]
        for c in order:
            row.append(r.get(c))
            if c in pcols:
                row.append(p.get(c))
        rows.append(row)
    notes = list(run.get("notes") or [])
    notes.append(f"Columns marked '{PAPER_SUFFIX.strip()}': {paper.get('note') or 'the paper’s values'} "
                 "Rows and columns follow the paper's table.")
    return {**run, "columns": columns, "rows": rows, "formats": formats, "notes": notes, "paper": None,
            "paper_beside": True}


def _face_finding_of(features: Mapping[str, Any]) -> dict[str, Any] | None:
    counts = features.get("alignment")
    return face_finding(counts) if counts else None


def _network(cfg: Any, features: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": features.get("model") or cfg.model.name, "architecture": features.get("architecture"),
            "weights": cfg.model.weights}


def _scale_facts(data: Mapping[str, Any], attacks: Mapping[str, Any], dfs: Mapping[str, Any]) -> str:
    """What the run measured, in one sentence (the demo banner's facts, computed from the run)."""
    split = data.get("split") or {}
    parts = [f"{data.get('identities', 'n/a')} identities", f"{data.get('images', 'n/a')} images"]
    if split:
        parts.append(f"{split.get('natural', 0)} natural and {split.get('source', 0)} source images")
    sel = attacks.get("selection") or {}
    if sel:
        parts.append(f"{sel.get('attacked')} sources attacked by the classifier attacks")
    if dfs.get("sources") is not None:
        parts.append(f"{dfs['sources']} by the deep-features attacks")
    return ", ".join(parts)
