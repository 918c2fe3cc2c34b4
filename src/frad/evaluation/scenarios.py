"""The face-recognition scenarios of the paper's Section 5.3, as pure functions.

NumPy arrays in, JSON-able dicts out; the figures (:mod:`frad.evaluation.figures`) and the
report draw from these dicts alone, so they can be redrawn from ``results.json``.

Identification (Figures 6-8)
    ``distances_to_assigned``: distance of each adversarial's embedding to the template of the
    class it is assigned to (the classifier's prediction for classifier attacks, the k-NN over
    templates for deep-features attacks; ``nearest_template`` gives the latter).
    ``distance_summary``: per group (classifier / deep features x targeted / untargeted), per
    attack and for natural images against their own template, the mean, quartiles and a
    histogram over bins shared by everything in the summary.  ``distance_table`` tabulates it.

Maximum pixel perturbation (Figure 9)
    ``max_pixel_perturbation``: per pixel, the largest absolute change over R, G, B (grey
    levels).  ``MPPHistogram`` accumulates its distribution chunk by chunk (one histogram bin
    per grey level, 0 .. delta) and the share of pixels below ``within`` = 5 grey levels.
    ``mpp_summary`` runs it over an iterable of chunks; ``mpp_table`` tabulates summaries.

    "Within 5" is read as *strictly below* 5: at delta = 5 every pixel is within 5 inclusively,
    yet the paper reports 88.3%, so its share counts the pixels that did not reach the bound.
    The inclusive share is reported too (``share_within_inclusive_pct``).

Verification (Tables 3 and 4, Figures 10 and 11), built from the paper's text
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

Deep-features success (Sec. 5.3.1)
    ``success_rates`` per (setting, delta); ``df_success_table``.

Labels: ``attack_family('bim') == 'BIM'``, ``attack_label('deep_features', 5.0) ==
'DF δ = 5'``, ``delta_label(5.0) == 'δ = 5'`` (the paper's row labels), ``attack_kind``.
Tables come out in the report's schema (``title``, ``columns``, ``rows``, ``formats``,
``paper``, ``notes``; see :mod:`frad.pipeline.report`), the paper's values from
:mod:`frad.evaluation.paper`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError
from ..recognition.similarity import check_metric, paired_similarity
from ..utils.ordering import natural_key
from ..utils.seeding import stable_int
from . import paper

__all__ = [
    "SETTINGS",
    "KINDS",
    "SCENARIOS",
    "FAMILY_LABELS",
    "attack_family",
    "attack_kind",
    "attack_label",
    "delta_label",
    "nearest_template",
    "distances_to_assigned",
    "distance_summary",
    "distance_table",
    "max_pixel_perturbation",
    "MPPHistogram",
    "mpp_summary",
    "mpp_table",
    "select_partners",
    "verification_rates",
    "verification_scenario",
    "verification_summary",
    "verification_table",
    "success_rates",
    "df_success_table",
]

SETTINGS: tuple[str, ...] = ("targeted", "untargeted")
KINDS: tuple[str, ...] = ("classifier", "deep_features")
SCENARIOS: tuple[str, ...] = ("impersonation", "evasion")
SHORT = {"targeted": "T", "untargeted": "UT"}
KIND_LABELS = {"classifier": "Classifier", "deep_features": "DF"}
FAMILY_LABELS: dict[str, str] = {
    "bim": "BIM",
    "fgsm": "FGSM",
    "mifgsm": "MI-FGSM",
    "mifgsm_l2": "MI-FGSM",
    "cw_l2": "CW",
    "lbfgs": "L-BFGS",
    "deep_features": "DF",
}
_FAMILY_ORDER = ("BIM", "MI-FGSM", "CW")
_TOL = 1e-3  # grey levels: float round-off at a bound counts as at the bound


# ---------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------
def attack_family(attack: str) -> str:
    """The paper's name of an attack's family: 'bim' -> 'BIM', 'cw_l2' -> 'CW' (others unchanged)."""
    return FAMILY_LABELS.get(attack, attack)


def attack_kind(attack: str) -> str:
    """'deep_features' for the kNN-guided attack, 'classifier' for every other attack."""
    return "deep_features" if attack == "deep_features" else "classifier"


def delta_label(delta: float) -> str:
    """The paper's row label for a deep-features budget: ``'δ = 5'``."""
    return f"δ = {float(delta):g}"


def attack_label(attack: str, epsilon: float | None = None) -> str:
    """A display label: the family for classifier attacks, ``'DF δ = 5'`` for deep features."""
    if attack == "deep_features" and epsilon is not None and math.isfinite(float(epsilon)):
        return f"DF {delta_label(epsilon)}"
    return attack_family(attack)


def _order_labels(labels: Iterable[str], order: Sequence[str] | None) -> list[str]:
    uniq = list(dict.fromkeys(labels))
    first = [x for x in (order if order is not None else _FAMILY_ORDER) if x in uniq]
    return first + sorted((x for x in uniq if x not in first), key=natural_key)


def _settings(values: ArrayLike, n: int, what: str) -> np.ndarray:
    a = np.asarray(values).ravel()
    if a.size != n:
        raise DataError(f"{what} has {a.size} entries, expected {n}")
    if a.dtype == bool:
        return np.where(a, "targeted", "untargeted")
    a = a.astype(str)
    bad = sorted(set(a.tolist()) - set(SETTINGS))
    if bad:
        raise DataError(f"{what} must be 'targeted' / 'untargeted' (or booleans), got {bad}")
    return a


def _floats(values: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinity")
    return a


def _pct(count: int | float, total: int | float) -> float | None:
    return None if total == 0 else 100.0 * float(count) / float(total)


# ---------------------------------------------------------------------------------------
# identification: distances to the assigned template (Figures 6-8)
# ---------------------------------------------------------------------------------------
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


def _check_embeddings(x: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise DataError(f"{what} must be (N, D) embeddings, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinity")
    return a


def nearest_template(
    embeddings: ArrayLike, templates: ArrayLike, template_classes: ArrayLike, metric: str = "euclidean"
) -> np.ndarray:
    """The class of each embedding's nearest template (a 1-NN over the templates: the class
    the identification system assigns, as for deep-features adversarials)."""
    from ..recognition.similarity import pairwise_distance

    x = _check_embeddings(embeddings, "embeddings")
    t = _check_embeddings(templates, "templates")
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
    x = _check_embeddings(embeddings, "embeddings")
    t = _check_embeddings(templates, "templates")
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
    d = _floats(distances, "distances")
    n = d.size
    lab = np.asarray(labels).ravel().astype(str)
    if lab.size != n:
        raise DataError(f"labels has {lab.size} entries, expected {n}")
    st = _settings(settings, n, "settings")
    kd = np.asarray(kinds).ravel().astype(str)
    if kd.size != n:
        raise DataError(f"kinds has {kd.size} entries, expected {n}")
    bad = sorted(set(kd.tolist()) - set(KINDS))
    if bad:
        raise DataError(f"kinds must be one of {', '.join(KINDS)}, got {bad}")
    nat = None if natural is None else _floats(natural, "natural distances")
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must be (low, high) with low < high, got {value_range}")
    else:
        allv = d if nat is None else np.concatenate([d, nat])
        if allv.size == 0:
            raise DataError("no distances to summarise")
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)

    groups: dict[str, Any] = {}
    for kind in KINDS:
        for s in SETTINGS:
            m = (kd == kind) & (st == s)
            if m.any():
                groups[f"{kind}-{s}"] = {"label": f"{KIND_LABELS[kind]} - {SHORT[s]}", "kind": kind, "setting": s,
                                         **_stats(d[m], edges)}
    attacks: dict[str, Any] = {}
    for s in SETTINGS:
        m_s = st == s
        if not m_s.any():
            continue
        attacks[s] = {}
        for label in _order_labels(lab[m_s].tolist(), order):
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


# ---------------------------------------------------------------------------------------
# maximum pixel perturbation (Figure 9)
# ---------------------------------------------------------------------------------------
def _channel_axis(shape: tuple[int, ...], channels_last: bool | None) -> int:
    if len(shape) != 4:
        raise DataError(f"images must be N x 3 x H x W or N x H x W x 3, got shape {shape}")
    if channels_last is None:
        if shape[1] == 3:
            return 1
        if shape[3] == 3:
            return 3
        raise DataError(f"images must have 3 channels (N x 3 x H x W or N x H x W x 3), got shape {shape}")
    ax = 3 if channels_last else 1
    if shape[ax] != 3:
        raise DataError(f"images must have 3 channels on axis {ax}, got shape {shape}")
    return ax


def max_pixel_perturbation(
    adversarial: ArrayLike, source: ArrayLike, *, channels_last: bool | None = None
) -> np.ndarray:
    """(N, H, W) maximum absolute change over R, G, B per pixel, in the images' units (grey levels).

    Images are N x 3 x H x W or N x H x W x 3 (``channels_last=None`` looks at the shape and
    takes N x 3 x H x W when both fit).
    """
    a = np.asarray(adversarial)
    s = np.asarray(source)
    if a.shape != s.shape:
        raise DataError(f"adversarial and source images differ in shape: {a.shape} vs {s.shape}")
    ax = _channel_axis(a.shape, channels_last)
    return np.abs(a.astype(np.float32) - s.astype(np.float32)).max(axis=ax)


class MPPHistogram:
    """Accumulates the maximum-pixel-perturbation distribution of one attack, chunk by chunk.

    Bins are ``bin_width`` grey levels wide, centred on 0, 1, ..., ceil(delta) (for width 1),
    so quantised images put each integer perturbation in its own bin.  ``update`` adds a chunk
    of (adversarial, source) images (optionally only the rows in ``mask``); ``summary``
    returns the JSON-able distribution.  Memory: one chunk at a time.
    """

    def __init__(
        self,
        delta: float,
        *,
        within: float = 5.0,
        bin_width: float = 1.0,
        setting: str | None = None,
        label: str | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if not (math.isfinite(delta) and delta > 0):
            raise ConfigError(f"delta must be a number > 0, got {delta!r}")
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise ConfigError(f"bin_width must be > 0, got {bin_width!r}")
        if not (math.isfinite(within) and within > 0):
            raise ConfigError(f"within must be > 0, got {within!r}")
        if setting is not None and setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)} or None, got {setting!r}")
        self.delta = float(delta)
        self.within = float(within)
        self.bin_width = float(bin_width)
        self.setting = setting
        self.label = label
        self.channels_last = channels_last
        nb = int(math.ceil(self.delta / self.bin_width - 1e-9))
        self.edges = (np.arange(nb + 2) - 0.5) * self.bin_width
        self.counts = np.zeros(nb + 1, np.int64)
        self.pixels = 0
        self.images = 0
        self.below = 0
        self.at_most = 0
        self.above_delta = 0
        self.total = 0.0
        self.maximum = 0.0

    def update(self, adversarial: ArrayLike, source: ArrayLike, mask: ArrayLike | None = None) -> MPPHistogram:
        """Add a chunk (N images); ``mask`` (N,) bool keeps only some rows (e.g. the successful)."""
        mpp = max_pixel_perturbation(adversarial, source, channels_last=self.channels_last)
        if mask is not None:
            m = np.asarray(mask).astype(bool).ravel()
            if m.size != mpp.shape[0]:
                raise DataError(f"mask has {m.size} entries for {mpp.shape[0]} images")
            mpp = mpp[m]
        if not np.isfinite(mpp).all():
            raise DataError("images contain NaN or infinity")
        flat = mpp.ravel().astype(np.float64)
        self.images += int(mpp.shape[0])
        self.pixels += int(flat.size)
        if flat.size:
            self.counts += np.histogram(np.clip(flat, 0.0, self.edges[-1] - 1e-9), self.edges)[0]
            self.below += int((flat < self.within - _TOL).sum())
            self.at_most += int((flat <= self.within + _TOL).sum())
            self.above_delta += int((flat > self.delta + _TOL).sum())
            self.total += float(flat.sum())
            self.maximum = max(self.maximum, float(flat.max()))
        return self

    def summary(self) -> dict[str, Any]:
        """``{delta, within, setting, label, bin_edges, counts, images, pixels, share_within_pct
        (strictly below ``within``), share_within_inclusive_pct, above_delta, mean, max}``."""
        return {
            "delta": self.delta,
            "within": self.within,
            "setting": self.setting,
            "label": self.label,
            "bin_edges": self.edges.tolist(),
            "counts": self.counts.astype(int).tolist(),
            "images": self.images,
            "pixels": self.pixels,
            "share_within_pct": _pct(self.below, self.pixels),
            "share_within_inclusive_pct": _pct(self.at_most, self.pixels),
            "above_delta": self.above_delta,
            "mean": self.total / self.pixels if self.pixels else None,
            "max": self.maximum if self.pixels else None,
        }


def mpp_summary(
    chunks: Iterable[tuple[ArrayLike, ...]],
    delta: float,
    *,
    within: float = 5.0,
    bin_width: float = 1.0,
    setting: str | None = None,
    label: str | None = None,
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """:class:`MPPHistogram` over ``chunks`` of ``(adversarial, source)`` or
    ``(adversarial, source, mask)`` arrays (e.g. one attack shard at a time)."""
    h = MPPHistogram(delta, within=within, bin_width=bin_width, setting=setting, label=label,
                     channels_last=channels_last)
    for chunk in chunks:
        if len(chunk) not in (2, 3):
            raise DataError("each MPP chunk must be (adversarial, source) or (adversarial, source, mask)")
        h.update(*chunk)
    return h.summary()


def mpp_table(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per delta, the share of pixels below 5 grey levels, targeted and untargeted, from
    :func:`mpp_summary` results (each must carry ``delta`` and ``setting``)."""
    cells: dict[float, dict[str, Mapping[str, Any]]] = {}
    for name, s in summaries.items():
        if s.get("setting") not in SETTINGS:
            raise DataError(f"MPP summary {name!r} has no setting ('targeted' / 'untargeted')")
        cells.setdefault(float(s["delta"]), {})[s["setting"]] = s
    within = {float(s["within"]) for s in summaries.values()}
    w = f"{within.pop():g}" if len(within) == 1 else "5"
    rows = []
    for d in sorted(cells):
        t, u = cells[d].get("targeted"), cells[d].get("untargeted")
        rows.append([delta_label(d),
                     t["share_within_pct"] if t else None, u["share_within_pct"] if u else None,
                     t["mean"] if t else None, u["mean"] if u else None,
                     t["images"] if t else None, u["images"] if u else None])
    return {
        "title": f"Pixels whose maximum perturbation is below {w} grey levels (%)",
        "caption": "Deep-features adversarials; maximum absolute change over R, G, B per pixel (Figure 9).",
        "columns": ["δ", "Targeted", "Untargeted", "Mean MPP T", "Mean MPP UT", "Images T", "Images UT"],
        "rows": rows,
        "formats": ["", ".1f", ".1f", ".2f", ".2f", "d", "d"],
        "paper": paper.paper_table("mpp"),
        "notes": [f"Strictly below {w} grey levels: at δ = 5 every pixel is within 5 inclusively, and the "
                  "paper reports 88.3%, so it counts pixels that did not reach the bound."],
    }


# ---------------------------------------------------------------------------------------
# verification: impersonation and evasion (Tables 3 and 4, Figures 10 and 11)
# ---------------------------------------------------------------------------------------
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
    o = _floats(original_scores, "original scores")
    a = _floats(adversarial_scores, "adversarial scores")
    if o.size != a.size:
        raise DataError(f"original and adversarial scores differ in length ({o.size} vs {a.size})")
    if not math.isfinite(float(threshold)):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    t = float(threshold)
    if int(bins) < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    if value_range is None:
        both = np.concatenate([o, a, [t]])
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ConfigError(f"value_range must be (low, high) with low < high, got {value_range}")
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
        "original_pct": _pct(fooled(o), o.size),
        "adversarial_pct": _pct(fooled(a), a.size),
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
    src = _check_embeddings(source_embeddings, "source embeddings")
    adv = _check_embeddings(adversarial_embeddings, "adversarial embeddings")
    pool = _check_embeddings(pool_embeddings, "pool embeddings")
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


# ---------------------------------------------------------------------------------------
# deep-features success rates
# ---------------------------------------------------------------------------------------
def success_rates(success: ArrayLike, deltas: ArrayLike, settings: ArrayLike) -> dict[str, Any]:
    """Per setting and delta, the share of successful attacks: ``{setting: {'δ = 5': {delta,
    n, successful, rate_pct}}}`` (deltas ascending)."""
    ok = np.asarray(success).astype(bool).ravel()
    d = _floats(deltas, "deltas")
    if d.size != ok.size:
        raise DataError(f"deltas has {d.size} entries for {ok.size} attacks")
    st = _settings(settings, ok.size, "settings")
    out: dict[str, Any] = {}
    for s in SETTINGS:
        m_s = st == s
        if not m_s.any():
            continue
        out[s] = {}
        for delta in np.unique(d[m_s]):
            m = m_s & (d == delta)
            out[s][delta_label(delta)] = {"delta": float(delta), "n": int(m.sum()), "successful": int(ok[m].sum()),
                                          "rate_pct": _pct(int(ok[m].sum()), int(m.sum()))}
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
        t, u = rates.get("targeted", {}).get(label), rates.get("untargeted", {}).get(label)
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
