"""The paper's own numbers (Massoli et al., "Detection of Face Recognition Adversarial Attacks").

Every value of Tables 1-6 as printed, plus the numbers the text gives: the deep-features
success rates, the share of pixels whose maximum perturbation stays below 5 grey levels, and
the verification system's AUC and EER threshold.  They were measured with SE-ResNet-50
(senet50_ft) on the VGGFace2 test set (500 identities); a run on another network or dataset
is not expected to match them, only to be read beside them.

Tables are keyed by the report's table ids (``table1`` .. ``table6``, ``df_success``,
``mpp``, ``fr_system``) and shaped like a ``results.json`` table's ``paper`` entry:
``{"title", "columns", "rows", "formats", "note"}``.  Cells are copied as printed (AUCs as
fractions, Tables 3 and 4 and the rates in percent); ``None`` marks a value the paper does
not report.  Configuration labels use frad's spelling ("LSTM + M + L2" for the paper's
"LSTM + M + L_2"); rows and columns are in the paper's order.

API:

- ``PAPER``: provenance (title, model, dataset).
- ``paper_table(table_id, layout="paper") -> dict | None``: a deep copy of a table;
  ``layout="wide"`` pivots Tables 5 and 6 (configuration x delta) like frad's own tables.
- ``paper_cell(table_id, row, column) -> value | None``: one cell by row label and column name.
- ``table_ids() -> list[str]``.
- Constants: ``VERIFICATION_AUC`` (0.9903), ``VERIFICATION_EER_THRESHOLD`` (0.448),
  ``DF_SUCCESS_PCT``, ``MPP_WITHIN_5_PCT``.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "PAPER",
    "MODEL_NOTE",
    "VERIFICATION_AUC",
    "VERIFICATION_EER_THRESHOLD",
    "DF_SUCCESS_PCT",
    "MPP_WITHIN_5_PCT",
    "PAPER_TABLES",
    "paper_table",
    "paper_cell",
    "table_ids",
]

PAPER: dict[str, str] = {
    "title": "Detection of Face Recognition Adversarial Attacks",
    "authors": "F. V. Massoli, F. Carrara, G. Amato, F. Falchi",
    "model": "SE-ResNet-50 (senet50_ft, Cao et al. 2018) with a 500-way head",
    "dataset": "VGGFace2 test set (500 identities, ~340 images each)",
}
MODEL_NOTE = "The paper's values: SE-ResNet-50 on VGGFace2 (500 test identities)."

#: Face verification (Sec. 5.3.2): ROC AUC (99.03%) and the cosine threshold at the EER.
VERIFICATION_AUC = 0.9903
VERIFICATION_EER_THRESHOLD = 0.448

#: Deep-features attack success rates in percent (Sec. 5.3.1), by delta (grey levels).
#: The untargeted rate is one number for all three deltas in the text.
DF_SUCCESS_PCT: dict[str, dict[float, float]] = {
    "targeted": {5.0: 95.6, 7.0: 96.2, 10.0: 96.3},
    "untargeted": {5.0: 96.8, 7.0: 96.8, 10.0: 96.8},
}

#: Share of pixels (percent) whose maximum perturbation over R, G, B is below 5 grey levels,
#: targeted deep-features attacks (Sec. 5.3.1, Figure 9); "almost identical" untargeted.
MPP_WITHIN_5_PCT: dict[float, float] = {5.0: 88.3, 7.0: 85.6, 10.0: 84.7}

_CONFIGS = [
    "LSTM + M + L2",
    "LSTM + C + L2",
    "LSTM + M + cos",
    "LSTM + C + cos",
    "MLP + M + L2",
    "MLP + C + L2",
    "MLP + M + cos",
    "MLP + C + cos",
]
_AUC4 = ["", ".3f", ".3f", ".3f", ".3f"]


def _table(title: str, columns: list[str], rows: list[list[Any]], formats: list[str], note: str = "") -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows, "formats": formats,
            "note": (MODEL_NOTE + (" " + note if note else "")).strip()}


PAPER_TABLES: dict[str, dict[str, Any]] = {
    "fr_system": _table(
        "The face-recognition system",
        ["Measure", "Value"],
        [
            ["Verification ROC AUC (cosine)", VERIFICATION_AUC],
            ["Verification threshold at the EER (cosine)", VERIFICATION_EER_THRESHOLD],
        ],
        ["", ".4g"],
        "The paper reports no head or identification accuracy.",
    ),
    "table1": _table(
        "Table 1: AUC per targeted attack",
        ["Configuration", "BIM", "CW", "MI-FGSM", "Macro-AUC"],
        [[c, *v] for c, v in zip(_CONFIGS, [
            [0.977, 0.871, 0.986, 0.944],
            [0.970, 0.857, 0.982, 0.936],
            [0.986, 0.904, 0.991, 0.960],
            [0.968, 0.895, 0.981, 0.948],
            [0.964, 0.793, 0.979, 0.912],
            [0.962, 0.808, 0.979, 0.916],
            [0.890, 0.668, 0.940, 0.832],
            [0.868, 0.720, 0.915, 0.834],
        ])],
        _AUC4,
    ),
    "table2": _table(
        "Table 2: AUC per untargeted attack",
        ["Configuration", "BIM", "CW", "MI-FGSM", "Macro-AUC"],
        [[c, *v] for c, v in zip(_CONFIGS, [
            [0.878, 0.615, 0.889, 0.794],
            [0.863, 0.596, 0.869, 0.776],
            [0.929, 0.599, 0.930, 0.819],
            [0.884, 0.568, 0.886, 0.779],
            [0.885, 0.559, 0.882, 0.775],
            [0.874, 0.557, 0.874, 0.768],
            [0.763, 0.460, 0.769, 0.664],
            [0.730, 0.467, 0.739, 0.645],
        ])],
        _AUC4,
    ),
    "table3": _table(
        "Table 3: impersonation, % of pairs above the EER threshold",
        ["Attack", "Targeted Original", "Targeted Adversarial", "Untargeted Original", "Untargeted Adversarial"],
        [
            ["δ = 5", 4.0, 92.8, 19.9, 81.5],
            ["δ = 7", 4.0, 93.9, 19.9, 81.6],
            ["δ = 10", 4.4, 93.6, 19.8, 81.1],
            ["CW", 50.5, 34.9, 8.0, 9.3],
        ],
        ["", ".1f", ".1f", ".1f", ".1f"],
    ),
    "table4": _table(
        "Table 4: evasion, % of pairs below the EER threshold",
        ["Attack", "Targeted Original", "Targeted Adversarial", "Untargeted Original", "Untargeted Adversarial"],
        [
            ["δ = 5", 5.4, 18.9, 4.1, 9.9],
            ["δ = 7", 4.3, 22.9, 4.3, 11.4],
            ["δ = 10", 4.3, 26.2, 4.1, 12.5],
            ["CW", 4.0, 17.1, 4.0, 6.2],
        ],
        ["", ".1f", ".1f", ".1f", ".1f"],
    ),
    "table5": _table(
        "Table 5: AUC of the best detectors on targeted deep-features attacks",
        ["Configuration", "AUC", "δ"],
        [
            ["MLP + L2", 0.976, 5], ["LSTM + cos", 0.972, 5], ["LSTM + L2", 0.969, 5], ["MLP + cos", 0.915, 5],
            ["MLP + L2", 0.977, 7], ["LSTM + cos", 0.975, 7], ["LSTM + L2", 0.968, 7], ["MLP + cos", 0.908, 7],
            ["MLP + L2", 0.980, 10], ["LSTM + cos", 0.978, 10], ["LSTM + L2", 0.972, 10], ["MLP + cos", 0.915, 10],
        ],
        ["", ".3f", "d"],
        "The paper does not say which representative (medoid or centroid) each configuration used.",
    ),
    "table6": _table(
        "Table 6: AUC of the best detectors on untargeted deep-features attacks",
        ["Configuration", "AUC", "δ"],
        [
            ["LSTM + cos", 0.530, 5], ["MLP + L2", 0.492, 5], ["MLP + cos", 0.571, 5], ["LSTM + L2", 0.671, 5],
            ["LSTM + cos", 0.541, 7], ["MLP + L2", 0.481, 7], ["MLP + cos", 0.596, 7], ["LSTM + L2", 0.688, 7],
            ["LSTM + cos", 0.573, 10], ["MLP + L2", 0.467, 10], ["MLP + cos", 0.609, 10], ["LSTM + L2", 0.700, 10],
        ],
        ["", ".3f", "d"],
        "The paper does not say which representative (medoid or centroid) each configuration used.",
    ),
    "df_success": _table(
        "Deep-features attack success rate (%)",
        ["δ", "Targeted", "Untargeted"],
        [[f"δ = {d:g}", DF_SUCCESS_PCT["targeted"][d], DF_SUCCESS_PCT["untargeted"][d]] for d in (5.0, 7.0, 10.0)],
        ["", ".1f", ".1f"],
        "The text gives one untargeted rate (96.8%) for all three deltas.",
    ),
    "mpp": _table(
        "Pixels whose maximum perturbation is below 5 grey levels (%)",
        ["δ", "Targeted", "Untargeted"],
        [[f"δ = {d:g}", MPP_WITHIN_5_PCT[d], None] for d in (5.0, 7.0, 10.0)],
        ["", ".1f", ".1f"],
        "Untargeted: 'almost identical' in the text, no number given.",
    ),
}


def table_ids() -> list[str]:
    """The ids of the tables the paper gives values for."""
    return list(PAPER_TABLES)


def paper_table(table_id: str, layout: str = "paper") -> dict[str, Any] | None:
    """A copy of the paper's table ``table_id`` (``None`` if the paper has none).

    ``layout="wide"`` turns Tables 5 and 6 (one row per configuration and delta) into one
    row per configuration and one column per delta, the layout of frad's own tables.
    """
    if layout not in ("paper", "wide"):
        raise ValueError(f"layout must be 'paper' or 'wide', got {layout!r}")
    t = PAPER_TABLES.get(table_id)
    if t is None:
        return None
    t = copy.deepcopy(t)
    if layout == "wide" and table_id in ("table5", "table6"):
        deltas = list(dict.fromkeys(r[2] for r in t["rows"]))
        configs = list(dict.fromkeys(r[0] for r in t["rows"]))
        cell = {(r[0], r[2]): r[1] for r in t["rows"]}
        t["columns"] = ["Configuration", *(f"δ = {d:g}" for d in deltas)]
        t["rows"] = [[c, *(cell.get((c, d)) for d in deltas)] for c in configs]
        t["formats"] = ["", *([".3f"] * len(deltas))]
    return t


def paper_cell(table_id: str, row: str, column: str) -> Any:
    """The paper's value in ``table_id`` at the row labelled ``row`` and column ``column``
    (``None`` if the paper has no such cell).  Rows are found by their first cell."""
    t = paper_table(table_id, layout="wide" if table_id in ("table5", "table6") else "paper")
    if t is None or column not in t["columns"]:
        return None
    j = t["columns"].index(column)
    for r in t["rows"]:
        if str(r[0]) == row:
            return r[j]
    return None
