"""ROC figures of the paper (Figures 2, 3 and 12) from detection results, with matplotlib.

API (each returns a ``matplotlib.figure.Figure``; nothing is shown or written):

- ``plot_roc_configurations(results, settings=None)``: Figure 2 -- one panel per setting
  (targeted on top, untargeted below), one curve per configuration (all of that setting's
  adversarial test samples pooled against the natural test samples).
- ``plot_roc_families(results, configurations=None)``: Figure 3 -- one panel per setting,
  one curve per attack family, for each setting's best configuration (highest macro-AUC)
  unless ``configurations`` maps setting -> key.
- ``plot_roc_generalisation(results, configurations=None)``: Figure 12 -- one panel per
  deep-features attack (e.g. each delta), curves for the chosen configurations of each
  setting ("- T" targeted, "- UT" untargeted).  By default, per setting, the better
  representative for each (architecture, metric) pair, chosen on the classifier attacks
  (not on the deep-features results), as the paper shows its best models.
- ``save_figure(fig, path, dpi=150)``: write atomically (format from the suffix).
- ``plot_detection_figures(results, directory, fmt="png") -> {name: path}``: all three.

``results`` is ``DetectionRun.results`` (or the same dict read back from JSON).  Figures use
``matplotlib.figure.Figure`` directly (Agg canvas): no pyplot, no GUI backend, no global state.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import DataError
from ..kinds import SETTINGS, Setting
from ..utils.io import atomic_write_bytes
from .detection.configurations import DetectorConfig
from .detection.tables import best_configuration

__all__ = [
    "plot_roc_configurations",
    "plot_roc_families",
    "plot_roc_generalisation",
    "save_figure",
    "plot_detection_figures",
]

def _labels(results: Mapping[str, Any]) -> dict[str, str]:
    return {c["key"]: c["label"] for c in results.get("configurations", [])}


def _curves(results: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    try:
        return results["curves"][kind]
    except (KeyError, TypeError):
        raise DataError(
            f"results hold no {kind!r} ROC curves (expected results from run_detection_experiment)"
        ) from None


def _new_figure(n_panels: int, *, vertical: bool, size: float = 4.2) -> tuple[Figure, list[Any]]:
    rows, cols = (n_panels, 1) if vertical else (1, n_panels)
    fig = Figure(figsize=(size * cols + 0.6, size * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    return fig, axes


def _style(ax: Any, title: str) -> None:
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")


def plot_roc_configurations(results: Mapping[str, Any], settings: Sequence[str] | None = None) -> Figure:
    """Figure 2: per setting, the pooled ROC of every configuration."""
    curves = _curves(results, "classifier")
    names = _labels(results)
    settings = list(settings) if settings is not None else list(curves)
    if not settings:
        raise DataError("results hold no settings to plot")
    fig, axes = _new_figure(len(settings), vertical=True)
    for ax, s in zip(axes, settings):
        if s not in curves:
            raise DataError(f"results hold no ROC curves for setting {s!r}")
        for key, fams in curves[s].items():
            c = fams["pooled"]
            ax.plot(c["fpr"], c["tpr"], label=f"{names.get(key, key)} (AUC {c['auc']:.3f})", linewidth=1.3)
        _style(ax, f"{s.capitalize()} attacks")
    return fig


def plot_roc_families(results: Mapping[str, Any], configurations: Mapping[str, str] | None = None) -> Figure:
    """Figure 3: per setting, the ROC of every attack family for the best configuration."""
    curves = _curves(results, "classifier")
    names = _labels(results)
    settings = list(curves)
    if not settings:
        raise DataError("results hold no settings to plot")
    fig, axes = _new_figure(len(settings), vertical=False)
    for ax, s in zip(axes, settings):
        key = (configurations or {}).get(s) or best_configuration(results, s)
        if key not in curves[s]:
            raise DataError(f"results hold no ROC curves for configuration {key!r} in setting {s!r}")
        for fam, c in curves[s][key].items():
            if fam == "pooled":
                continue
            ax.plot(c["fpr"], c["tpr"], label=f"{fam} (AUC {c['auc']:.3f})", linewidth=1.3)
        _style(ax, f"{s.capitalize()}: {names.get(key, key)}")
    return fig


def _default_generalisation_configs(results: Mapping[str, Any], setting: str) -> list[str]:
    """Per (arch, metric), the representative with the higher classifier-attack macro-AUC."""
    dets = results["detectors"].get(setting, {})
    best: dict[tuple[str, str], str] = {}
    for key, ev in dets.items():
        c = DetectorConfig.parse(key)
        cur = best.get((c.arch, c.metric))
        if cur is None or ev["macro_auc"] > dets[cur]["macro_auc"]:
            best[(c.arch, c.metric)] = key
    return list(best.values())


def plot_roc_generalisation(
    results: Mapping[str, Any], configurations: Mapping[str, Sequence[str]] | None = None
) -> Figure:
    """Figure 12: per deep-features attack, ROCs of the chosen detectors of each setting."""
    curves = _curves(results, "generalisation")
    if not curves:
        raise DataError("results hold no generalisation curves (no deep-features adversarials were scored)")
    names = _labels(results)
    attacks: list[str] = []
    for by_cfg in curves.values():
        for fams in by_cfg.values():
            attacks.extend(a for a in fams if a != "pooled" and a not in attacks)
    fig, axes = _new_figure(len(attacks), vertical=True)
    for ax, attack in zip(axes, attacks):
        for s, by_cfg in curves.items():
            keys = list((configurations or {}).get(s) or _default_generalisation_configs(results, s))
            for key in keys:
                c = by_cfg.get(key, {}).get(attack)
                if c is None:
                    continue
                short = Setting(s).short if s in SETTINGS else s
                label = f"{names.get(key, key)} - {short} (AUC {c['auc']:.3f})"
                ax.plot(c["fpr"], c["tpr"], label=label, linewidth=1.2,
                        linestyle="-" if s == Setting.TARGETED else "--")
        _style(ax, attack)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Render ``fig`` and write it atomically; the suffix picks the format (png, pdf, svg)."""
    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=p.suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write_bytes(p, buf.getvalue())
    return p


def plot_detection_figures(
    results: Mapping[str, Any], directory: str | os.PathLike[str], *, fmt: str = "png", dpi: int = 150
) -> dict[str, Path]:
    """Write Figures 2, 3 (and 12 when there are generalisation curves) into ``directory``."""
    d = Path(directory)
    out = {
        "figure2": save_figure(plot_roc_configurations(results), d / f"figure2_roc_configurations.{fmt}", dpi=dpi),
        "figure3": save_figure(plot_roc_families(results), d / f"figure3_roc_families.{fmt}", dpi=dpi),
    }
    if results.get("curves", {}).get("generalisation"):
        out["figure12"] = save_figure(
            plot_roc_generalisation(results), d / f"figure12_roc_generalisation.{fmt}", dpi=dpi
        )
    return out
