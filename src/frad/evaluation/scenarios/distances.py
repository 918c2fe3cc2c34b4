"""Identification (Figures 6-8): distances of adversarial embeddings to the template of the
class they are assigned to.

``distances_to_assigned``: distance of each adversarial's embedding to the template of the
class it is assigned to (the classifier's prediction for classifier attacks, the k-NN over
templates for deep-features attacks; ``nearest_template`` gives the latter).
``distance_summary``: per group (classifier / deep features x targeted / untargeted), per
attack and for natural images against their own template, the mean, quartiles and a
histogram over bins shared by everything in the summary.  ``distance_table`` tabulates it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ...errors import DataError
from ...recognition.similarity import check_metric
from ._arrays import check_embeddings, finite_floats, histogram_range, settings_array
from ...kinds import KINDS, SETTINGS
from .labels import order_labels

__all__ = ["nearest_template", "distances_to_assigned", "distance_summary", "distance_table"]


def _template_rows(assigned: np.ndarray, template_classes: np.ndarray) -> np.ndarray:
    cls = np.asarray(template_classes).ravel()
    if np.unique(cls).size != cls.size:
        raise DataError("template_classes must be distinct (one template per class)")
    order = np.argsort(cls, kind="stable")
    sorted_cls = cls[order]
    pos = np.searchsorted(sorted_cls, assigned)
    pos_c = np.clip(pos, 0, max(cls.size - 1, 0))
    found = (pos < cls.size) & (sorted_cls[pos_c] == assigned) if cls.size else np.zeros(assigned.size, bool)
    if not found.all():
        missing = sorted(set(np.asarray(assigned)[~found].tolist()))[:5]
        raise DataError(f"assigned classes without a template: {missing}")
    return order[pos_c]



def nearest_template(
    embeddings: ArrayLike, templates: ArrayLike, template_classes: ArrayLike, metric: str = "euclidean"
) -> np.ndarray:
    """The class of each embedding's nearest template (a 1-NN over the templates: the class
    the identification system assigns, as for deep-features adversarials)."""
    from ...recognition.similarity import pairwise_distance

    x = check_embeddings(embeddings, "embeddings")
    t = check_embeddings(templates, "templates")
    cls = np.asarray(template_classes).ravel()
    if cls.size != t.shape[0]:
        raise DataError(f"{t.shape[0]} templates but {cls.size} template classes")
    if x.shape[1] != t.shape[1]:
        raise DataError(f"embeddings have {x.shape[1]} dimensions, templates {t.shape[1]}")
    out = np.empty(x.shape[0], dtype=cls.dtype)
    for s in range(0, x.shape[0], 4096):
        d = np.asarray(pairwise_distance(x[s:s + 4096], t, check_metric(metric)))
        out[s:s + 4096] = cls[d.argmin(1)]
    return out


def distances_to_assigned(
    embeddings: ArrayLike,
    assigned: ArrayLike,
    templates: ArrayLike,
    template_classes: ArrayLike,
    metric: str = "euclidean",
) -> np.ndarray:
    """(N,) distance of each embedding to the template of its assigned class.

    ``metric='euclidean'`` (the paper's Figures 6-8) or ``'cosine'`` (``1 - cos``).
    """
    metric = check_metric(metric)
    x = check_embeddings(embeddings, "embeddings")
    t = check_embeddings(templates, "templates")
    a = np.asarray(assigned).ravel()
    if a.size != x.shape[0]:
        raise DataError(f"{x.shape[0]} embeddings but {a.size} assigned classes")
    if np.asarray(template_classes).size != t.shape[0]:
        raise DataError(f"{t.shape[0]} templates but {np.asarray(template_classes).size} template classes")
    if x.shape[1] != t.shape[1]:
        raise DataError(f"embeddings have {x.shape[1]} dimensions, templates {t.shape[1]}")
    rows = _template_rows(a, np.asarray(template_classes))
    out = np.empty(x.shape[0], np.float64)
    for s in range(0, x.shape[0], 4096):
        xe = x[s:s + 4096].astype(np.float64)
        te = t[rows[s:s + 4096]].astype(np.float64)
        if metric == "euclidean":
            out[s:s + 4096] = np.linalg.norm(xe - te, axis=1)
        else:
            nx = np.maximum(np.linalg.norm(xe, axis=1), 1e-12)
            nt = np.maximum(np.linalg.norm(te, axis=1), 1e-12)
            out[s:s + 4096] = 1.0 - (xe * te).sum(1) / (nx * nt)
    return out


def _stats(x: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    n = int(x.size)
    counts = np.histogram(np.clip(x, edges[0], edges[-1]), edges)[0] if n else np.zeros(edges.size - 1, int)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "q1": None, "q3": None, "min": None,
                "max": None, "counts": counts.astype(int).tolist()}
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return {"n": n, "mean": float(x.mean()), "std": float(x.std()), "median": float(med), "q1": float(q1),
            "q3": float(q3), "min": float(x.min()), "max": float(x.max()), "counts": counts.astype(int).tolist()}


def distance_summary(
    distances: ArrayLike,
    labels: ArrayLike,
    settings: ArrayLike,
    kinds: ArrayLike,
    *,
    natural: ArrayLike | None = None,
    metric: str = "euclidean",
    bins: int = 40,
    value_range: tuple[float, float] | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Distributions of distances to the assigned template, for Figures 6-8.

    ``distances`` (N,) come from :func:`distances_to_assigned` for every successful
    adversarial; per row, ``labels`` names its attack as the figures show it (e.g. 'BIM',
    'DF δ = 5'; :func:`attack_label`), ``settings`` is 'targeted' / 'untargeted' (or a
    boolean: targeted), ``kinds`` 'classifier' / 'deep_features'.  ``natural``: distances of
    natural images to their own class template, the baseline.  Every histogram uses the same
    ``bins`` edges over ``value_range`` (default: the data's range); values outside fall into
    the end bins.  Returns ``{"metric", "bin_edges", "groups": {"classifier-targeted": stats,
    ...}, "attacks": {setting: {label: stats}}, "natural": stats | None}``; stats hold n,
    mean, std, median, q1, q3, min, max and ``counts``.
    """
    check_metric(metric)
    d = finite_floats(distances, "distances")
    n = d.size
    lab = np.asarray(labels).ravel().astype(str)
    if lab.size != n:
        raise DataError(f"labels has {lab.size} entries, expected {n}")
    st = settings_array(settings, n, "settings")
    kd = np.asarray(kinds).ravel().astype(str)
    if kd.size != n:
        raise DataError(f"kinds has {kd.size} entries, expected {n}")
    bad = sorted(set(kd.tolist()) - set(KINDS))
    if bad:
        raise DataError(f"kinds must be one of {', '.join(KINDS)}, got {bad}")
    nat = None if natural is None else finite_floats(natural, "natural distances")
    lo, hi = histogram_range(bins, value_range, d if nat is None else np.concatenate([d, nat]),
                             "no distances to summarise")
    edges = np.linspace(lo, hi, int(bins) + 1)

    groups: dict[str, Any] = {}
    for kind in KINDS:
        for s in SETTINGS:
            m = (kd == kind) & (st == s)
            if m.any():
                groups[f"{kind}-{s}"] = {"label": f"{kind.label} - {s.short}", "kind": kind, "setting": s,
                                         **_stats(d[m], edges)}
    attacks: dict[str, Any] = {}
    for s in SETTINGS:
        m_s = st == s
        if not m_s.any():
            continue
        attacks[s] = {}
        for label in order_labels(lab[m_s].tolist(), order):
            m = m_s & (lab == label)
            kinds_here = sorted(set(kd[m].tolist()))
            attacks[s][label] = {"kind": kinds_here[0] if len(kinds_here) == 1 else "mixed", **_stats(d[m], edges)}
    return {
        "metric": metric,
        "bin_edges": edges.tolist(),
        "groups": groups,
        "attacks": attacks,
        "natural": None if nat is None else _stats(nat, edges),
    }


def distance_table(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A table of :func:`distance_summary`: per setting and attack, n, mean, median, quartiles."""
    cols = ["Setting", "Attack", "n", "Mean", "Median", "Q1", "Q3"]
    rows: list[list[Any]] = []
    for s, by_label in summary.get("attacks", {}).items():
        for label, x in by_label.items():
            rows.append([s, label, x["n"], x["mean"], x["median"], x["q1"], x["q3"]])
    nat = summary.get("natural")
    if nat:
        rows.append(["natural", "own template", nat["n"], nat["mean"], nat["median"], nat["q1"], nat["q3"]])
    name = "Euclidean distance" if summary.get("metric", "euclidean") == "euclidean" else "Cosine distance"
    return {
        "title": f"{name} of adversarial embeddings to the assigned class template",
        "caption": "Successful adversarials only; the last row: natural images against their own class template.",
        "columns": cols,
        "rows": rows,
        "formats": ["", "", "d", ".3f", ".3f", ".3f", ".3f"],
        "paper": None,
        "notes": ["The paper shows these distributions only as Figures 6-8."],
    }


