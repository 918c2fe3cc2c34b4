"""Detection scores to metrics: per attack family and pooled, the AUC with a bootstrap
interval, the EER, its threshold and the accuracy there, and thinned ROC curves.

Scores: higher = more adversarial.  Each family is scored against *all* natural samples;
the macro-AUC is the mean over families.  ``FAMILY_ORDER`` is the paper's column order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from ...detection.sampling import as_id_array
from ...errors import ConfigError, DataError
from ...utils.metrics import accuracy_at, auc, eer, rank_auc, roc
from ...utils.ordering import natural_key

__all__ = ["FAMILY_ORDER", "evaluate_scores", "ordered", "add_probability_thresholds"]

FAMILY_ORDER: tuple[str, ...] = ("BIM", "MI-FGSM", "CW")


def _thin_curve(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, list[float]]:
    """Drop collinear interior ROC points (the curve and its area are unchanged)."""
    keep = np.r_[True, np.logical_or(np.diff(fpr, 2) != 0, np.diff(tpr, 2) != 0), True]
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def _binary_metrics(nat: np.ndarray, adv: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = np.r_[np.zeros(nat.size, dtype=np.int8), np.ones(adv.size, dtype=np.int8)]
    scores = np.r_[nat, adv]
    a = auc(labels, scores)
    rate, thr = eer(labels, scores)
    fpr, tpr, _ = roc(labels, scores)
    metrics = {
        "auc": a,
        "eer": rate,
        "eer_threshold": thr,
        "accuracy_at_eer": accuracy_at(labels, scores, thr),
        "n_adversarial": int(adv.size),
        "n_natural": int(nat.size),
    }
    curve = _thin_curve(fpr, tpr)
    curve["auc"] = a
    return metrics, curve


def ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    """Unique names: those in ``order`` first, in that order, then the rest in natural order."""
    uniq = list(dict.fromkeys(str(v) for v in values))
    return [f for f in order if f in uniq] + sorted((f for f in uniq if f not in order), key=natural_key)


def evaluate_scores(
    natural_scores: ArrayLike,
    adversarial_scores: ArrayLike,
    adversarial_families: ArrayLike,
    *,
    family_order: Sequence[str] = FAMILY_ORDER,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> dict[str, Any]:
    """Per-family and macro AUC (each family against all naturals), bootstrap CIs, EER, curves.

    The bootstrap resamples the natural scores and each family's scores separately (with
    replacement, sizes kept) in every replicate; each family's interval and the macro-AUC's
    interval come from the same replicates.  ``n_bootstrap=0`` skips the intervals.
    """
    nat = np.asarray(natural_scores, dtype=np.float64).ravel()
    adv = np.asarray(adversarial_scores, dtype=np.float64).ravel()
    fam = as_id_array(np.asarray(adversarial_families).ravel(), "adversarial_families").astype(str)
    if fam.size != adv.size:
        raise DataError(f"adversarial_families has {fam.size} rows but adversarial_scores has {adv.size}")
    if nat.size == 0 or adv.size == 0:
        raise DataError(f"need natural and adversarial scores, got {nat.size} and {adv.size}")
    if not (0 < confidence < 1):
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_bootstrap) < 0:
        raise ConfigError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    families = ordered(fam.tolist(), family_order)
    out: dict[str, Any] = {"families": {}, "curves": {}}
    for f in families:
        m, c = _binary_metrics(nat, adv[fam == f])
        out["families"][f] = m
        out["curves"][f] = c
    out["macro_auc"] = float(np.mean([out["families"][f]["auc"] for f in families]))
    pooled, pooled_curve = _binary_metrics(nat, adv)
    out["pooled"] = pooled
    out["curves"]["pooled"] = pooled_curve
    out["n_natural"] = int(nat.size)

    if int(n_bootstrap) > 0:
        rng = np.random.default_rng(random_state)
        per = [adv[fam == f] for f in families]
        boot = np.empty((int(n_bootstrap), len(families)))
        for b in range(int(n_bootstrap)):
            nb = nat[rng.integers(0, nat.size, nat.size)]
            for j, p in enumerate(per):
                boot[b, j] = rank_auc(nb, p[rng.integers(0, p.size, p.size)])
        q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]
        for j, f in enumerate(families):
            out["families"][f]["auc_ci"] = np.quantile(boot[:, j], q).tolist()
        out["macro_auc_ci"] = np.quantile(boot.mean(axis=1), q).tolist()
    else:
        for f in families:
            out["families"][f]["auc_ci"] = None
        out["macro_auc_ci"] = None
    out["confidence"] = float(confidence)
    out["n_bootstrap"] = int(n_bootstrap)
    return out


def add_probability_thresholds(ev: dict[str, Any]) -> None:
    """Scores here are logits (``decision_function``); add each EER threshold as a probability."""
    for m in [*ev["families"].values(), ev["pooled"]]:
        m["eer_threshold_probability"] = float(expit(m["eer_threshold"]))

