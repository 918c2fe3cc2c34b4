"""How far to trust an operating threshold: the false-positive rate a threshold chosen on a few
validation naturals actually gives on the test naturals, with exact binomial intervals.

A detector's threshold is set so that ``fpr`` (e.g. 5%) of the *validation* naturals score
above it.  On a few dozen naturals that quantile is noisy, and so is the test FPR measured on
a few dozen more: 1 false positive of 36 test naturals is 2.8%, 6 of 36 is 16.7%, and both are
consistent with a true 5%.  This module states both uncertainties:

- :func:`clopper_pearson`: the exact (Clopper-Pearson) interval of a binomial proportion
  ``k / n``, from SciPy's beta quantiles (the same as
  ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``);
- :func:`threshold_fpr_interval`: the spread of the *true* FPR of a threshold placed at the
  ``fpr`` quantile of ``n`` validation naturals.  For continuous scores and exchangeable
  naturals, the share of the natural distribution above the ``(k+1)``-th highest of ``n``
  scores is ``Beta(k + 1, n - k)`` distributed (``k = floor(fpr * n)``), whatever the score
  distribution;
- :func:`operating_point` / :func:`operating_point_table`: the counts, rates and intervals per
  detector, as stored in the benchmark's ``results.json`` and shown in the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import DataError

__all__ = ["clopper_pearson", "threshold_fpr_interval", "operating_point", "operating_point_table"]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided ``confidence`` interval of the proportion ``k / n`` (Clopper-Pearson)."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n <= 0 or not 0 <= k <= n:
        raise DataError(f"a proportion needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def threshold_fpr_interval(n: int, fpr: float, confidence: float = 0.95) -> tuple[float, float]:
    """Central ``confidence`` interval of the true FPR of a threshold set at the ``fpr`` quantile of
    ``n`` validation naturals (the share above the ``(k+1)``-th highest score, ``Beta(k+1, n-k)``)."""
    from scipy.stats import beta

    n = int(n)
    if n <= 0:
        raise DataError("no validation naturals")
    k = int(math.floor(float(fpr) * n + 1e-9))
    if k >= n:
        return 0.0, 1.0
    a = 1.0 - confidence
    return float(beta.ppf(a / 2, k + 1, n - k)), float(beta.ppf(1 - a / 2, k + 1, n - k))


def operating_point(natural_scores: ArrayLike, adversarial_scores: ArrayLike, threshold: float, *,
                    confidence: float = 0.95) -> dict[str, Any]:
    """Counts, rates and exact intervals at ``threshold`` (adversarial when ``score >= threshold``)."""
    nat = np.asarray(natural_scores, np.float64).ravel()
    adv = np.asarray(adversarial_scores, np.float64).ravel()
    fp, tp = int((nat >= threshold).sum()), int((adv >= threshold).sum())
    out: dict[str, Any] = {"threshold": float(threshold), "n_natural": int(nat.size), "false_positives": fp,
                           "fpr": fp / nat.size if nat.size else None,
                           "fpr_ci": list(clopper_pearson(fp, nat.size, confidence)) if nat.size else None,
                           "n_adversarial": int(adv.size), "true_positives": tp,
                           "tpr": tp / adv.size if adv.size else None,
                           "tpr_ci": list(clopper_pearson(tp, adv.size, confidence)) if adv.size else None,
                           "confidence": confidence}
    return out


def operating_point_table(results: Mapping[str, Any], setting: str, titles: Mapping[str, str]) -> dict[str, Any] | None:
    """The report table: per detector, the nominal FPR beside the test FPR it achieved (k of n, exact
    interval), whether the nominal rate lies in that interval, and the TPR at the same threshold."""
    recs = (results.get("results") or {}).get(setting) or {}
    fpr = float(results.get("fpr", 0.05))
    rows = []
    for name, r in recs.items():
        op = (r.get("float32") or {}).get("operating_point")
        if not op or op.get("n_natural") is None or op.get("fpr_ci") is None:
            continue
        lo, hi = op["fpr_ci"]
        rows.append([titles.get(name, name), fpr,
                     {"value": op["fpr"], "ci": [lo, hi], "format": "pct1"},
                     f"{op['false_positives']} / {op['n_natural']}",
                     "yes" if lo <= fpr <= hi else "no",
                     {"value": op["tpr"], "ci": op["tpr_ci"], "format": "pct1"} if op.get("tpr_ci") else op.get("tpr")])
    if not rows:
        return None
    d = (results.get("data") or {}).get(setting) or {}
    n_thr, n_test = d.get("threshold_naturals"), d.get("test_natural")
    pct = f"{fpr:.0%}"
    notes = [f"Each threshold is set so that {pct} of the validation naturals score above it; the test FPR is the "
             f"share of the {n_test} natural test images above it, with its exact 95% (Clopper-Pearson) interval; "
             "'Nominal in interval' says whether the test counts are consistent with the nominal rate."]
    if n_thr:
        lo, hi = threshold_fpr_interval(int(n_thr), fpr)
        notes.append(f"The thresholds were chosen on {n_thr} validation naturals: with that many, a threshold at the "
                     f"{pct} quantile has a true FPR between {lo:.1%} and {hi:.1%} (95%, order statistics), "
                     "whatever the detector.")
    if n_test:
        lo, hi = clopper_pearson(int(round(fpr * n_test)), int(n_test))
        notes.append(f"On {n_test} test naturals, even an exact {pct} would be measured with a 95% interval of "
                     f"about {lo:.1%}-{hi:.1%}: differences between detectors' test FPRs inside such a range are noise.")
    return {"title": f"Operating point: {setting} detectors at the nominal {pct} false-positive rate",
            "columns": ["Detector", "Nominal FPR", "Test FPR [95% exact interval]", "False positives / test naturals",
                        "Nominal in interval", "TPR at the threshold (pooled) [95%]"],
            "rows": rows, "formats": ["", "pct1", "pct1", "", "", "pct1"], "notes": notes}
