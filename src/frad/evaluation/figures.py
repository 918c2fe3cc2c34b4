"""Figures 6-11 of the paper and example grids, drawn from the JSON-able scenario summaries.

Every function returns a ``matplotlib.figure.Figure`` on an Agg canvas (no pyplot, no GUI,
no global state); nothing is shown or written except by :func:`write_scenario_figures`,
which saves with :func:`frad.evaluation.plots.save_figure`.  Inputs are the dicts of
:mod:`frad.evaluation.scenarios` (or the same read back from ``results.json``), so figures
can be redrawn from a run's results alone; the example grid takes images.

- ``plot_distance_groups(summary)``: Figure 6, distance to the assigned class template,
  classifier vs deep-features attacks, targeted ("- T") and untargeted ("- UT").
- ``plot_distance_attacks(summary, setting)``: Figure 7 (targeted) / 8 (untargeted), one
  curve per attack.
- ``plot_mpp(summaries, setting="targeted")``: Figure 9, the maximum-pixel-perturbation
  distribution per delta.
- ``plot_verification(summary)``: Figure 10 (impersonation) / 11 (evasion): "- Org" and
  "- Adv" similarity distributions per attack with the threshold line; targeted on top,
  untargeted below.
- ``plot_examples(sources, adversarials, ...)``: rows of (source, adversarial, amplified
  perturbation); ``example_amplification`` gives the factor it uses by default.
- ``write_scenario_figures(directory, ...) -> {figure id: path}``: Figures 6-11 as
  ``<directory>/<id>.<fmt>`` for the summaries given.

Histograms are drawn as steps of the share of each distribution's samples per bin, so
attacks with different numbers of samples compare by shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ..errors import DataError
from ..kinds import SETTINGS, AttackKind, Setting
from .plots import save_figure

__all__ = [
    "plot_distance_groups",
    "plot_distance_attacks",
    "plot_mpp",
    "plot_verification",
    "plot_examples",
    "example_amplification",
    "write_scenario_figures",
]

_GROUP_COLORS = {
    "classifier-targeted": "tab:blue",
    "classifier-untargeted": "tab:orange",
    "deep_features-targeted": "tab:green",
    "deep_features-untargeted": "tab:red",
}


def _figure(rows: int, cols: int, width: float = 6.4, height: float = 3.8) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False).ravel().tolist()


def _share(counts: Sequence[int]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def _stairs(ax: Any, edges: Sequence[float], counts: Sequence[int], **kw: Any) -> None:
    ax.stairs(_share(counts), np.asarray(edges, dtype=np.float64), **kw)


def _distance_axis(ax: Any, summary: Mapping[str, Any], title: str) -> None:
    metric = summary.get("metric", "euclidean")
    ax.set_xlabel("Euclidean distance to the assigned class template" if metric == "euclidean"
                  else "Cosine distance to the assigned class template")
    ax.set_ylabel("Share of samples per bin")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _natural(ax: Any, summary: Mapping[str, Any]) -> None:
    nat = summary.get("natural")
    if nat and nat.get("n"):
        _stairs(ax, summary["bin_edges"], nat["counts"], color="0.45", linestyle=":", linewidth=1.4,
                label=f"Natural, own class (n={nat['n']}, mean {nat['mean']:.3g})")


def plot_distance_groups(summary: Mapping[str, Any]) -> Figure:
    """Figure 6: distances of classifier and deep-features adversarials to their assigned
    class template, targeted and untargeted, from :func:`~frad.evaluation.scenarios.distance_summary`."""
    groups = summary.get("groups") or {}
    if not groups:
        raise DataError("the distance summary holds no adversarial groups to plot")
    fig, (ax,) = _figure(1, 1, width=7.0, height=4.4)
    for key, g in groups.items():
        _stairs(ax, summary["bin_edges"], g["counts"], color=_GROUP_COLORS.get(key), linewidth=1.6,
                label=f"{g['label']} (n={g['n']}, mean {g['mean']:.3g})")
    _natural(ax, summary)
    _distance_axis(ax, summary, "Distance to the assigned class template")
    return fig


def plot_distance_attacks(summary: Mapping[str, Any], setting: str = Setting.TARGETED) -> Figure:
    """Figure 7 (``setting='targeted'``) or 8 (``'untargeted'``): one distribution per attack."""
    attacks = (summary.get("attacks") or {}).get(setting) or {}
    if not attacks:
        raise DataError(f"the distance summary holds no {setting} attacks to plot")
    fig, (ax,) = _figure(1, 1, width=7.0, height=4.4)
    for label, a in attacks.items():
        ls = "-" if a.get("kind") == AttackKind.DEEP_FEATURES else "--"
        _stairs(ax, summary["bin_edges"], a["counts"], linewidth=1.5, linestyle=ls,
                label=f"{label} (n={a['n']}, mean {a['mean']:.3g})")
    _natural(ax, summary)
    _distance_axis(ax, summary, f"{setting.capitalize()} attacks: distance to the assigned class template")
    return fig


def plot_mpp(summaries: Mapping[str, Mapping[str, Any]], setting: str | None = Setting.TARGETED) -> Figure:
    """Figure 9: the share of pixels per maximum perturbation (grey levels), one series per
    delta, from :func:`~frad.evaluation.scenarios.mpp_summary` results (``setting=None``: all)."""
    chosen = [(k, s) for k, s in summaries.items() if setting is None or s.get("setting") in (setting, None)]
    chosen = [(k, s) for k, s in chosen if s.get("pixels")]
    if not chosen:
        raise DataError(f"no maximum-pixel-perturbation summaries to plot for setting {setting!r}")
    chosen.sort(key=lambda kv: float(kv[1].get("delta", 0.0)))
    fig, (ax,) = _figure(1, 1, width=7.0, height=4.4)
    k = len(chosen)
    widths = [float(np.diff(s["bin_edges"]).min()) for _, s in chosen]
    w = min(widths) * 0.8 / k
    for i, (key, s) in enumerate(chosen):
        edges = np.asarray(s["bin_edges"], dtype=np.float64)
        centres = (edges[:-1] + edges[1:]) / 2 + (i - (k - 1) / 2) * w
        share = _share(s["counts"]) * 100
        label = s.get("label") or key
        within = s.get("share_within_pct")
        if within is not None:
            label = f"{label} ({within:.1f}% below {s.get('within', 5):g})"
        ax.bar(centres, share, width=w, label=label)
    within_vals = {float(s.get("within", 5.0)) for _, s in chosen}
    for wv in within_vals:
        ax.axvline(wv - 0.5 * min(widths), color="0.3", linestyle="-.", linewidth=1)
    ax.set_xlabel("Maximum pixel perturbation over R, G, B (grey levels)")
    ax.set_ylabel("Pixels (%)")
    ax.set_title("Maximum pixel perturbation" + (f", {setting} deep-features attacks" if setting else ""))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return fig


def plot_verification(summary: Mapping[str, Any]) -> Figure:
    """Figure 10 (impersonation) or 11 (evasion) from
    :func:`~frad.evaluation.scenarios.verification_summary`: per attack, the similarity
    distribution of (x, partner) ("- Org", dashed) and (x_adv, partner) ("- Adv", solid),
    with the threshold as a dash-dotted line; targeted on top, untargeted below.

    Each attack gets its own panel (one column per attack, shared axes), so an attack whose
    curve coincides with another's (e.g. δ = 7 and δ = 5) is never hidden under it; the
    histogram bins have the threshold as an edge."""
    rows = summary.get("rows") or {}
    settings = [s for s in SETTINGS if any(s in r for r in rows.values())]
    if not settings:
        raise DataError("the verification summary holds no results to plot")
    labels = [lab for lab, by_setting in rows.items() if any((by_setting.get(s) or {}).get("n") for s in settings)]
    labels = labels or list(rows)
    scenario = summary.get("scenario", "")
    metric = summary.get("metric", "cosine")
    fig = Figure(figsize=(3.6 * len(labels) + 0.6, 3.3 * len(settings)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(settings), len(labels), squeeze=False, sharex=True, sharey="row")
    thr = float(summary["threshold"])
    lo, hi = thr, thr  # x extent: every non-empty bin and the threshold
    for by_setting in rows.values():
        for r in by_setting.values():
            if r.get("n"):
                e = np.asarray(r["bin_edges"], dtype=np.float64)
                nonzero = (np.asarray(r["original_counts"]) > 0) | (np.asarray(r["adversarial_counts"]) > 0)
                used = np.flatnonzero(nonzero)
                if used.size:
                    lo, hi = min(lo, e[used[0]]), max(hi, e[used[-1] + 1])
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    what = "accepted" if scenario == "impersonation" else "rejected"
    for i, s in enumerate(settings):
        for j, label in enumerate(labels):
            ax = grid[i][j]
            r = rows[label].get(s)
            c = f"C{j % 10}"
            if r and r.get("n"):
                _stairs(ax, r["bin_edges"], r["original_counts"], color=c, linestyle="--", linewidth=1.1,
                        label=f"Org ({r['original_pct']:.1f}% {what})")
                _stairs(ax, r["bin_edges"], r["adversarial_counts"], color=c, linewidth=1.6,
                        label=f"Adv ({r['adversarial_pct']:.1f}% {what})")
            else:
                ax.text(0.5, 0.5, "no successful adversarials", transform=ax.transAxes, ha="center", fontsize="small")
            ax.axvline(thr, color="k", linestyle="-.", linewidth=1.2, label=f"EER threshold {thr:.3f}")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_title(f"{label}, {s} (n={r.get('n', 0) if r else 0})", fontsize="small")
            if i == len(settings) - 1:
                ax.set_xlabel("Cosine similarity" if metric == "cosine" else "Negated Euclidean distance")
            if j == 0:
                ax.set_ylabel("Share of pairs per bin")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    fig.suptitle(f"{scenario.capitalize()}: similarity of pairs, original (Org) vs adversarial (Adv)",
                 fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------
# example grid
# ---------------------------------------------------------------------------------------
def _hwc(images: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise DataError(f"{what} must be N x 3 x H x W or N x H x W x 3, got shape {a.shape}")
    if a.shape[1] == 3:
        return np.transpose(a, (0, 2, 3, 1))
    if a.shape[3] == 3:
        return a
    raise DataError(f"{what} must have 3 channels, got shape {a.shape}")


def example_amplification(sources: ArrayLike, adversarials: ArrayLike) -> float:
    """The default perturbation amplification of :func:`plot_examples`: the largest whole
    factor that keeps the largest change within +-127.5 grey levels (at least 1)."""
    s, a = _hwc(sources, "sources"), _hwc(adversarials, "adversarials")
    if s.shape != a.shape:
        raise DataError(f"sources and adversarials differ in shape: {s.shape} vs {a.shape}")
    m = float(np.abs(a - s).max()) if s.size else 0.0
    return float(max(1, math.floor(127.5 / m))) if m > 0 else 1.0


def plot_examples(
    sources: ArrayLike,
    adversarials: ArrayLike,
    *,
    amplification: float | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    max_samples: int = 4,
) -> Figure:
    """Rows of (source, adversarial, perturbation x ``amplification`` around mid-grey).

    Images are RGB in [0, 255], N x 3 x H x W or N x H x W x 3; the first ``max_samples``
    are shown.  ``amplification=None`` uses :func:`example_amplification`; the factor is
    stated in the column title.  ``labels`` (one per sample) annotate the rows.
    """
    s, a = _hwc(sources, "sources"), _hwc(adversarials, "adversarials")
    if s.shape != a.shape:
        raise DataError(f"sources and adversarials differ in shape: {s.shape} vs {a.shape}")
    n = min(int(max_samples), s.shape[0])
    if n < 1:
        raise DataError("no example images to plot")
    s, a = s[:n], a[:n]
    amp = example_amplification(s, a) if amplification is None else float(amplification)
    if not (math.isfinite(amp) and amp > 0):
        raise DataError(f"amplification must be a number > 0, got {amplification!r}")
    fig, axes = _figure(n, 3, width=2.2, height=2.3)
    pert = np.clip(127.5 + amp * (a - s), 0, 255)
    heads = ["Source", "Adversarial", f"Perturbation ×{amp:g}"]
    for i in range(n):
        linf = float(np.abs(a[i] - s[i]).max())
        for j, img in enumerate((s[i], a[i], pert[i])):
            ax = axes[3 * i + j]
            ax.imshow(np.clip(img, 0, 255) / 255.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize="small")
        axes[3 * i + 2].set_xlabel(f"L∞ = {linf:.1f}", fontsize="x-small")
        if labels is not None and i < len(labels):
            axes[3 * i].set_ylabel(str(labels[i]), fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------
# all at once
# ---------------------------------------------------------------------------------------
def write_scenario_figures(
    directory: str | os.PathLike[str],
    *,
    distances: Mapping[str, Any] | None = None,
    mpp: Mapping[str, Mapping[str, Any]] | None = None,
    impersonation: Mapping[str, Any] | None = None,
    evasion: Mapping[str, Any] | None = None,
    fmt: str = "png",
    dpi: int = 150,
) -> dict[str, Path]:
    """Write Figures 6-11 for the summaries given, as ``<directory>/figure<k>.<fmt>``;
    figures without data (e.g. no untargeted attacks) are left out."""
    d = Path(directory)
    out: dict[str, Path] = {}

    def put(fid: str, fig: Figure) -> None:
        out[fid] = save_figure(fig, d / f"{fid}.{fmt}", dpi=dpi)

    if distances is not None:
        if distances.get("groups"):
            put("figure6", plot_distance_groups(distances))
        for fid, s in (("figure7", Setting.TARGETED), ("figure8", Setting.UNTARGETED)):
            if (distances.get("attacks") or {}).get(s):
                put(fid, plot_distance_attacks(distances, s))
    if mpp and any(s.get("pixels") and s.get("setting") in (Setting.TARGETED, None) for s in mpp.values()):
        put("figure9", plot_mpp(mpp, Setting.TARGETED))
    if impersonation is not None and impersonation.get("rows"):
        put("figure10", plot_verification(impersonation))
    if evasion is not None and evasion.get("rows"):
        put("figure11", plot_verification(evasion))
    return out
