"""Deep-features success (Sec. 5.3.1): per setting and delta, the share of successful attacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ...errors import DataError
from .. import paper
from ._arrays import finite_floats, pct, settings_array
from ...kinds import SETTINGS, Setting
from .labels import delta_label

__all__ = ["success_rates", "df_success_table"]


def success_rates(success: ArrayLike, deltas: ArrayLike, settings: ArrayLike) -> dict[str, Any]:
    """Per setting and delta, the share of successful attacks: ``{setting: {'δ = 5': {delta,
    n, successful, rate_pct}}}`` (deltas ascending)."""
    ok = np.asarray(success).astype(bool).ravel()
    d = finite_floats(deltas, "deltas")
    if d.size != ok.size:
        raise DataError(f"deltas has {d.size} entries for {ok.size} attacks")
    st = settings_array(settings, ok.size, "settings")
    out: dict[str, Any] = {}
    for s in SETTINGS:
        m_s = st == s
        if not m_s.any():
            continue
        out[s] = {}
        for delta in np.unique(d[m_s]):
            m = m_s & (d == delta)
            out[s][delta_label(delta)] = {"delta": float(delta), "n": int(m.sum()), "successful": int(ok[m].sum()),
                                          "rate_pct": pct(int(ok[m].sum()), int(m.sum()))}
    return out


def df_success_table(rates: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The deep-features success table from :func:`success_rates`: per delta, targeted and
    untargeted success (%) and the number of attacked sources."""
    labels: dict[str, float] = {}
    for by_delta in rates.values():
        for label, r in by_delta.items():
            labels[label] = float(r["delta"])
    rows = []
    for label in sorted(labels, key=labels.__getitem__):
        t, u = rates.get(Setting.TARGETED, {}).get(label), rates.get(Setting.UNTARGETED, {}).get(label)
        rows.append([label, t["rate_pct"] if t else None, u["rate_pct"] if u else None,
                     t["n"] if t else None, u["n"] if u else None])
    return {
        "title": "Deep-features attack success rate (%)",
        "caption": "kNN-guided attacks (L-BFGS-B within ±δ grey levels); success = the k-NN over the class "
                   "templates returns the target (targeted) or any other identity (untargeted).",
        "columns": ["δ", "Targeted", "Untargeted", "Sources T", "Sources UT"],
        "rows": rows,
        "formats": ["", ".1f", ".1f", "d", "d"],
        "paper": paper.paper_table("df_success"),
        "notes": [],
    }

