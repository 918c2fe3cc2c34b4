"""Verification (Tables 3 and 4, Figures 10 and 11), built from the paper's text.

Impersonation: pairs (x_adv, x-) where x- is a natural image of the identity the
adversarial is assigned to, beside (x, x-); the attack works when the pair is accepted
(similarity >= threshold).  Evasion: pairs (x_adv, x+) where x+ is another natural image
of x's own identity, beside (x, x+); the attack works when the pair is rejected
(similarity < threshold).  Only successful adversarials count (their assigned identity
differs from the source's).  ``select_partners`` picks x- / x+ from a pool of natural
images, never the source itself, determined by (seed, source id, wanted identity) alone,
so every attack on the same source with the same assigned identity shares its partner.
``verification_rates`` works from similarities, ``verification_scenario`` from
embeddings; ``verification_summary`` gathers rows (e.g. each delta and CW) x settings, and
``verification_table`` gives the paper's Table 3 / 4 layout.  "Original" and
"Adversarial" are percentages (0-100), like the paper's tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ...errors import ConfigError, DataError
from ...recognition.similarity import check_metric, paired_similarity
from ...utils.seeding import stable_int
from .. import paper
from ._arrays import check_embeddings, finite_floats, histogram_range, pct
from ...kinds import SETTINGS

__all__ = [
    "SCENARIOS",
    "select_partners",
    "verification_rates",
    "threshold_edges",
    "verification_scenario",
    "verification_summary",
    "verification_table",
]

SCENARIOS: tuple[str, ...] = ("impersonation", "evasion")


def select_partners(
    wanted: ArrayLike,
    source_ids: ArrayLike,
    pool_labels: ArrayLike,
    pool_ids: ArrayLike,
    *,
    random_state: int = 0,
) -> np.ndarray:
    """(N,) index into the pool of a natural image of identity ``wanted[i]`` that is not the
    source image ``source_ids[i]`` (ids compared as text), or -1 if the pool has none.

    The pick depends only on (``random_state``, source id, wanted identity) and the pool, so
    the same source and identity get the same partner in every attack and call.
    """
    w = np.asarray(wanted).ravel()
    sid = np.asarray(source_ids).ravel().astype(str)
    pl = np.asarray(pool_labels).ravel()
    pid = np.asarray(pool_ids).ravel().astype(str)
    if sid.size != w.size:
        raise DataError(f"{w.size} wanted identities but {sid.size} source ids")
    if pid.size != pl.size:
        raise DataError(f"{pl.size} pool labels but {pid.size} pool ids")
    by_label: dict[Any, np.ndarray] = {}
    for lab in np.unique(pl):
        by_label[lab.item() if hasattr(lab, "item") else lab] = np.flatnonzero(pl == lab)
    out = np.full(w.size, -1, dtype=np.int64)
    for i, (lab, src) in enumerate(zip(w.tolist(), sid.tolist())):
        cand = by_label.get(lab)
        if cand is None:
            continue
        cand = cand[pid[cand] != src]
        if cand.size:
            out[i] = cand[stable_int(random_state, src, lab) % cand.size]
    return out


def _check_scenario(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    return scenario


def verification_rates(
    original_scores: ArrayLike,
    adversarial_scores: ArrayLike,
    threshold: float,
    scenario: str,
    *,
    bins: int = 50,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> dict[str, Any]:
    """Share of fooled pairs before and after the attack, from pair similarities.

    Impersonation: fooled = accepted (similarity >= threshold); evasion: fooled = rejected
    (similarity < threshold).  ``original_scores[i]`` is the similarity of (x, partner),
    ``adversarial_scores[i]`` that of (x_adv, partner).  Histograms share ``bins`` edges over
    ``value_range`` (cosine: [-1, 1]; ``None``: the data's range; values outside go to the
    end bins).  Percentages are 0-100, ``None`` without pairs.
    """
    _check_scenario(scenario)
    o = finite_floats(original_scores, "original scores")
    a = finite_floats(adversarial_scores, "adversarial scores")
    if o.size != a.size:
        raise DataError(f"original and adversarial scores differ in length ({o.size} vs {a.size})")
    if not math.isfinite(float(threshold)):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    t = float(threshold)
    lo, hi = histogram_range(bins, value_range, np.concatenate([o, a, [t]]))
    edges = threshold_edges(lo, hi, int(bins), t)
    lo, hi = float(edges[0]), float(edges[-1])

    def fooled(s: np.ndarray) -> int:
        return int((s >= t).sum()) if scenario == "impersonation" else int((s < t).sum())

    def hist(s: np.ndarray) -> list[int]:
        # accepted (>= t) and rejected (< t) pairs never share a bin: the threshold is an edge
        return np.histogram(np.clip(s, lo, hi), edges)[0].astype(int).tolist()

    return {
        "scenario": scenario,
        "threshold": t,
        "n": int(o.size),
        "original_pct": pct(fooled(o), o.size),
        "adversarial_pct": pct(fooled(a), a.size),
        "original_mean": float(o.mean()) if o.size else None,
        "adversarial_mean": float(a.mean()) if a.size else None,
        "bin_edges": edges.tolist(),
        "original_counts": hist(o),
        "adversarial_counts": hist(a),
    }


def threshold_edges(lo: float, hi: float, bins: int, threshold: float) -> np.ndarray:
    """About ``bins`` equal-width bin edges covering [lo, hi] with ``threshold`` one of them, so
    a histogram bar never mixes pairs on both sides of the decision threshold."""
    width = (hi - lo) / max(int(bins), 1)
    k0 = math.floor((lo - threshold) / width + 1e-9)
    k1 = math.ceil((hi - threshold) / width - 1e-9)
    k0, k1 = min(k0, 0), max(k1, 0, k0 + 1)  # the threshold is always inside the edges
    return threshold + width * np.arange(k0, k1 + 1, dtype=np.float64)  # k = 0 gives the threshold exactly


def verification_scenario(
    scenario: str,
    *,
    source_embeddings: ArrayLike,
    adversarial_embeddings: ArrayLike,
    source_labels: ArrayLike,
    assigned: ArrayLike,
    source_ids: ArrayLike,
    pool_embeddings: ArrayLike,
    pool_labels: ArrayLike,
    pool_ids: ArrayLike,
    threshold: float,
    success: ArrayLike | None = None,
    metric: str = "cosine",
    random_state: int = 0,
    bins: int = 50,
    value_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Impersonation or evasion for one attack, from embeddings.

    Row i is an adversarial crafted from a source image (``source_embeddings[i]``, identity
    ``source_labels[i]``, id ``source_ids[i]``) that the FR system assigns to ``assigned[i]``.
    Rows count when ``success[i]`` (default all) and ``assigned[i] != source_labels[i]``.
    The partner comes from the pool (:func:`select_partners`): of identity ``assigned[i]``
    for impersonation, ``source_labels[i]`` for evasion.  Similarities use ``metric``
    (cosine; 'euclidean' gives the negated distance, on the Verifier's scale, as is
    ``threshold``).  ``value_range`` defaults to [-1, 1] for cosine, the data's range otherwise.
    Returns :func:`verification_rates` plus ``metric``, ``n_successful`` (rows that count) and
    ``n_without_partner`` (dropped: the pool has no other image of the wanted identity).
    """
    _check_scenario(scenario)
    metric = check_metric(metric)
    src = check_embeddings(source_embeddings, "source embeddings")
    adv = check_embeddings(adversarial_embeddings, "adversarial embeddings")
    pool = check_embeddings(pool_embeddings, "pool embeddings")
    n = src.shape[0]
    if adv.shape != src.shape:
        raise DataError(f"source and adversarial embeddings differ in shape: {src.shape} vs {adv.shape}")
    if pool.shape[1] != src.shape[1]:
        raise DataError(f"pool embeddings have {pool.shape[1]} dimensions, sources {src.shape[1]}")
    lab = np.asarray(source_labels).ravel()
    asg = np.asarray(assigned).ravel()
    sid = np.asarray(source_ids).ravel()
    for what, arr in (("source_labels", lab), ("assigned", asg), ("source_ids", sid)):
        if arr.size != n:
            raise DataError(f"{what} has {arr.size} entries for {n} adversarials")
    pl = np.asarray(pool_labels).ravel()
    if pl.size != pool.shape[0]:
        raise DataError(f"pool_labels has {pl.size} entries for {pool.shape[0]} pool embeddings")
    ok = np.ones(n, bool) if success is None else np.asarray(success).astype(bool).ravel()
    if ok.size != n:
        raise DataError(f"success has {ok.size} entries for {n} adversarials")
    keep = ok & (asg != lab)
    rows = np.flatnonzero(keep)
    wanted = asg[rows] if scenario == "impersonation" else lab[rows]
    partner = select_partners(wanted, sid[rows], pl, pool_ids, random_state=random_state)
    has = partner >= 0
    rows, partner = rows[has], partner[has]
    if rows.size:
        o = np.asarray(paired_similarity(src[rows], pool[partner], metric), dtype=np.float64)
        a = np.asarray(paired_similarity(adv[rows], pool[partner], metric), dtype=np.float64)
    else:
        o = a = np.zeros(0)
    vr = value_range if value_range is not None else ((-1.0, 1.0) if metric == "cosine" else None)
    out = verification_rates(o, a, threshold, scenario, bins=bins, value_range=vr)
    out.update(metric=metric, n_successful=int(keep.sum()), n_without_partner=int((~has).sum()))
    return out


def verification_summary(
    scenario: str,
    threshold: float,
    rows: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    metric: str = "cosine",
) -> dict[str, Any]:
    """Gather per-attack results into one scenario summary (what Table 3 / 4 and Figure 10 /
    11 are drawn from): ``rows`` maps a row label (e.g. 'δ = 5', 'CW') to
    ``{setting: verification_scenario(...) result}``; rows keep their order."""
    _check_scenario(scenario)
    out_rows: dict[str, dict[str, Any]] = {}
    for label, by_setting in rows.items():
        bad = sorted(set(by_setting) - set(SETTINGS))
        if bad:
            raise DataError(f"verification row {label!r}: settings must be targeted / untargeted, got {bad}")
        for s, r in by_setting.items():
            if r.get("scenario") != scenario:
                raise DataError(
                    f"verification row {label!r} ({s}) holds {r.get('scenario')!r} results, not {scenario!r}"
                )
        out_rows[str(label)] = {s: dict(by_setting[s]) for s in SETTINGS if s in by_setting}
    return {"scenario": scenario, "threshold": float(threshold), "metric": check_metric(metric), "rows": out_rows}


def verification_table(summary: Mapping[str, Any], *, with_counts: bool = True) -> dict[str, Any]:
    """Table 3 (impersonation) or Table 4 (evasion) from :func:`verification_summary`:
    per row, "Original" and "Adversarial" percentages, targeted and untargeted (and, with
    ``with_counts``, the number of pairs behind each setting)."""
    scenario = _check_scenario(summary["scenario"])
    cols = ["Attack", "Targeted Original", "Targeted Adversarial", "Untargeted Original", "Untargeted Adversarial"]
    fmts = ["", ".1f", ".1f", ".1f", ".1f"]
    if with_counts:
        cols += ["Pairs T", "Pairs UT"]
        fmts += ["d", "d"]
    rows = []
    for label, by_setting in summary["rows"].items():
        row: list[Any] = [label]
        for s in SETTINGS:
            r = by_setting.get(s)
            row += [r["original_pct"], r["adversarial_pct"]] if r else [None, None]
        if with_counts:
            row += [by_setting[s]["n"] if s in by_setting else None for s in SETTINGS]
        rows.append(row)
    t = f"{summary['threshold']:.3f}"
    if scenario == "impersonation":
        title = "Table 3: impersonation, % of pairs above the EER threshold"
        caption = (f"Pairs (x, x-) and (x_adv, x-), x- a natural image of the identity the adversarial is "
                   f"assigned to; accepted when the {summary.get('metric', 'cosine')} similarity >= {t}.")
    else:
        title = "Table 4: evasion, % of pairs below the EER threshold"
        caption = (f"Pairs (x, x+) and (x_adv, x+), x+ another natural image of x's identity; rejected when "
                   f"the {summary.get('metric', 'cosine')} similarity < {t}.")
    return {
        "title": title,
        "caption": caption,
        "columns": cols,
        "rows": rows,
        "formats": fmts,
        "paper": paper.paper_table("table3" if scenario == "impersonation" else "table4"),
        "notes": ["Successful adversarials only; 'Original' uses the same partners as 'Adversarial'."],
    }


