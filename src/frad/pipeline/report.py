"""The run report: ``report.html`` and ``report.md``, rendered only from ``results.json`` and
the figure files it names (nothing is recomputed; the report of a finished run can be
rebuilt at any time with :func:`write_report`).

API:

- ``write_report(run_dir) -> {"html": Path, "markdown": Path}``: read
  ``<run_dir>/results.json``, write ``report.html`` and ``report.md`` atomically.
- ``read_results(run_dir) -> dict``: the parsed ``results.json`` (a ``DataError`` naming the
  file if it is missing or not a JSON object).
- ``render_html(results, run_dir=None) -> str`` / ``render_markdown(results, run_dir=None) -> str``:
  the two documents as text; with ``run_dir`` the figure files are checked (a missing file is
  reported in the page, never an exception).
- ``format_cell(value, fmt="") -> str``: how a table cell is printed.
- ``ordered_tables(tables)`` / ``ordered_figures(figures)``: ``(id, entry)`` in report order.

``results.json`` (written by the pipeline; every key optional unless marked)::

    {
      "frad_version": str, "created": ISO time,
      "commit": str | null,                        # the frad checkout's commit ("+dirty": local changes)
      "run": {"name": str, "config_file": str | null, "config": {...the full config...}},
      "dataset": {"name": str, "variant": str | null, "synthetic": bool,
                  "identities": int, "images": int},
      "network": {"name": str, "architecture": str | null, "weights": str | null},
      "scale": {"demo": bool, "note": str | null, "facts": str},   # facts: what the run measured
      "warnings": [str],                           # shown at the top of the report
      "stages": {stage: {"seconds": float, "skipped": bool, "status": str}},  # pipeline order
      "tables": {table_id: {
          "title": str, "caption": str | null,
          "columns": [str],                          # required
          "rows": [[cell, ...] | {column: cell}],    # lists, or mappings keyed by column
          "formats": [str] | null,                   # one hint per column, see below
          "paper": {"title": str, "columns": [str], "rows": [[cell]], "formats": [str],
                    "note": str} | null,             # the paper's values (frad.evaluation.paper)
          "notes": [str]}},
      "figures": {figure_id: {"title": str, "file": "figures/<id>.png", "caption": str,
                              "data": {...what the figure was drawn from...}}},
      "examples": {attack_name: {"file": "figures/examples-<attack>.png", "caption": str,
                                 "title": str (optional)}},
      "summary": {key: value},                     # headline numbers
      "summary_labels": {key: [label, format]},    # how the report names and prints them
      "orderings": {...},                          # the detectors' orderings check, with its counts
      "peers": {"compare_with": [str], "runs": [{"given", "path", "status", "warning", "name",
                "network", "created", "frad_version", "commit", "dataset", "differs",
                "orderings"}]}                     # report.compare_with (frad.pipeline.peers)
    }

Units: every rate and share in the tables and the summary of ``results.json`` (success
rates, accuracies, the shares of Tables 3-4 and of the MPP table) is a fraction in [0, 1];
the report prints them as percentages.  A figure's ``data`` keeps what the figure was drawn
from, where a key ending in ``_pct`` is a percentage (0-100).  Distances, norms and
thresholds keep their own units, named in each caption.
``dataset`` also carries ``face_finding`` ({images, searched, found, fallback,
fallback_share, methods}) and the identities left out for too few images.

Cells are numbers, strings, booleans, ``null`` (printed "n/a" with a footnote under the
table) or ``{"value": number, "ci": [low, high], "format": str}`` (printed with its interval;
``format``, optional, overrides the column's hint for that cell).  Format hints:
``""`` (automatic: |x| < 1 with 3 decimals, else 1 decimal, whole numbers without), a Python
format spec (``".3f"``, ``".1f"``, ``".2e"``), ``"d"`` (whole number), ``"pct1"`` / ``"pct0"`` /
``"pct2"`` (a fraction printed as a percentage with that many decimals: 0.956 -> "95.6%").

Tables come in the paper's order (``fr_system``, ``attack_success``, ``table1`` ..
``table6``, ``df_success``), then any others in the order given; figures ``figure2``,
``figure3``, ``figure6`` .. ``figure12``, then others.  When ``scale.demo`` or
``dataset.synthetic`` is true, a banner says plainly that the numbers are demo-scale /
synthetic and not comparable with the paper's; the demo banner states the run's own scale
(``scale.facts``).  A section explains every abbreviation (:data:`ABBREVIATIONS`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import DataError
from ..utils.io import atomic_write_text

__all__ = [
    "TABLE_ORDER",
    "FIGURE_ORDER",
    "ABBREVIATIONS",
    "read_results",
    "format_cell",
    "ordered_tables",
    "ordered_figures",
    "render_html",
    "render_markdown",
    "write_report",
]

RESULTS_NAME = "results.json"
TABLE_ORDER: tuple[str, ...] = (
    "fr_system", "attack_success", "table1", "table2", "table3", "table4", "table5", "table6", "df_success",
)
FIGURE_ORDER: tuple[str, ...] = (
    "figure2", "figure3", "figure6", "figure7", "figure8", "figure9", "figure10", "figure11", "figure12",
)
_DEFAULT_TITLES = {
    "fr_system": "The face-recognition system",
    "attack_success": "Classifier attacks: success rates",
    "table1": "Table 1: AUC per targeted attack",
    "table2": "Table 2: AUC per untargeted attack",
    "table3": "Table 3: impersonation",
    "table4": "Table 4: evasion",
    "table5": "Table 5: AUC on targeted deep-features attacks",
    "table6": "Table 6: AUC on untargeted deep-features attacks",
    "df_success": "Deep-features attack success rates",
}
#: Every abbreviation the tables, figures and captions use, explained once.
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("FR", "face recognition"),
    ("LSTM / MLP", "the detector: a (bidirectional) LSTM over the layer-by-layer distance trajectory, or a "
                   "multi-layer perceptron over it"),
    ("M / C", "the class representative distances are measured to: M = medoid (the class's most central "
              "training image), C = centroid (the mean of its training features)"),
    ("L2 / cos", "the distance of a feature to the representative: Euclidean (L2) or cosine"),
    ("T / UT", "targeted attacks (aimed at a chosen identity) / untargeted (any other identity)"),
    ("BIM", "Basic Iterative Method (iterated FGSM within an L-inf budget)"),
    ("FGSM", "Fast Gradient Sign Method"),
    ("MI-FGSM", "Momentum Iterative FGSM"),
    ("CW", "Carlini & Wagner's L2 attack"),
    ("L-BFGS", "the box-constrained L-BFGS attack"),
    ("DF", "the kNN-guided deep-features attack (L-BFGS-B on the embedding, within ±δ grey levels)"),
    ("δ", "the deep-features attack's per-pixel budget, in grey levels (pixels in [0, 255])"),
    ("ε (epsilon)", "a classifier attack's budget; for BIM / MI-FGSM an L-inf bound as a fraction of 255"),
    ("L2 / L-inf", "the size of a perturbation: Euclidean norm / largest change of any pixel value, in grey levels"),
    ("AUC", "area under the ROC curve (detection: natural vs adversarial; 0.5 = chance)"),
    ("Macro-AUC", "the mean of the per-family AUCs"),
    ("ROC", "receiver operating characteristic: true-positive vs false-positive rate over all thresholds"),
    ("EER", "equal error rate: where false acceptances equal false rejections (the verification threshold)"),
    ("FAR / TAR", "false / true acceptance rate of verification"),
    ("MPP", "maximum pixel perturbation: per pixel, the largest change over R, G, B"),
    ("Org / Adv", "pairs with the original source image / with its adversarial (Tables 3-4, Figures 10-11)"),
    ("x- / x+", "a natural image of the identity the adversarial is assigned to / another image of the source's "
                "own identity"),
    ("top-1 / top-5", "the true identity is the first / among the first five answers"),
    ("[a, b]", "a 95% bootstrap confidence interval"),
    ("uint8", "the adversarial rounded to 8-bit pixels, as a saved image carries it"),
    ("FPR / TPR", "false / true positive rate of a detector (naturals / adversarials flagged)"),
    ("NA / A", "security tables: the non-adaptive attack (ignores the detector) / the adaptive attack (knows it)"),
    ("BPDA", "backward-pass differentiable approximation: a detector without a useful gradient is attacked "
             "through a differentiable stand-in, its exact score kept in the forward pass"),
    ("λ (lambda)", "the weight of the detector's loss in the adaptive deep-features attack"),
)
NA = "n/a"
_NA_NOTE = "n/a: this run produced no value for the cell."
_NA_PAPER_NOTE = "n/a: not reported in the paper."
DEMO_BANNER = ("Demo-scale run: these numbers come from a small demonstration configuration; "
               "they are not comparable with the paper's.")
SYNTHETIC_BANNER = ("Synthetic data: this run used generated faces, not a real face dataset; "
                    "its numbers are not comparable with the paper's.")


# ---------------------------------------------------------------------------------------
# reading and formatting
# ---------------------------------------------------------------------------------------
def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``<run_dir>/results.json`` as a dict."""
    path = Path(run_dir) / RESULTS_NAME
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: no results file (the run has not produced its results yet)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the results ({exc.strerror})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, Mapping) and "value" in value:
        return _is_missing(value["value"])
    return False


def _auto(v: float) -> str:
    if v == int(v) and abs(v) < 1e15 and abs(v) >= 1:
        return f"{v:.0f}"
    if abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:.1f}"


def format_cell(value: Any, fmt: str | None = "") -> str:
    """A table cell as text (see the module docstring for the format hints)."""
    fmt = fmt or ""
    if _is_missing(value):
        return NA
    if isinstance(value, Mapping):
        if "value" not in value:
            return json.dumps(value, sort_keys=True, ensure_ascii=False)
        fmt = str(value.get("format") or fmt)  # a cell may carry its own format (a column of mixed quantities)
        text = format_cell(value["value"], fmt)
        ci = value.get("ci")
        if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2 and not any(map(_is_missing, ci)):
            text += f" [{format_cell(ci[0], fmt)}, {format_cell(ci[1], fmt)}]"
        return text
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        m = re.fullmatch(r"pct(\d)", fmt)
        if m:
            return f"{100 * v:.{int(m.group(1))}f}%"
        if fmt == "d":
            return f"{int(round(v)):d}" if abs(v - round(v)) < 1e-9 else _auto(v)
        if fmt:
            try:
                return format(value, fmt)
            except (ValueError, TypeError):
                return _auto(v)
        return str(value) if isinstance(value, int) else _auto(v)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
        return NA
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _ordered(entries: Any, order: Sequence[str]) -> list[tuple[str, Any]]:
    if not isinstance(entries, Mapping):
        return []
    keys = [str(k) for k in entries]
    first = [k for k in order if k in entries]
    return [(k, entries[k]) for k in first] + [(k, entries[k]) for k in keys if k not in first]


def ordered_tables(tables: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(table id, table)`` in the paper's order, then the rest as given."""
    return _ordered(tables, TABLE_ORDER)


def ordered_figures(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(figure id, entry)`` in the paper's order, then the rest as given."""
    return _ordered(figures, FIGURE_ORDER)


def _anchor(prefix: str, key: str) -> str:
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


# ---------------------------------------------------------------------------------------
# the document model both renderers share
# ---------------------------------------------------------------------------------------
@dataclass
class _Table:
    id: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str]
    paper: _Table | None = None


@dataclass
class _Picture:
    id: str
    title: str
    file: str
    caption: str
    missing: str | None  # the reason it cannot be shown, or None


@dataclass
class _Doc:
    title: str
    banners: list[str] = field(default_factory=list)
    meta: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)
    tables: list[_Table] = field(default_factory=list)
    figures: list[_Picture] = field(default_factory=list)
    examples: list[_Picture] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)
    config_text: str | None = None
    config_file: str | None = None


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _table(tid: str, t: Any, problems: list[str], *, paper: bool = False) -> _Table | None:
    where = f"table {tid!r}" + (" (paper)" if paper else "")
    if not isinstance(t, Mapping):
        problems.append(f"{where} is not an object; left out")
        return None
    rows_in = t.get("rows") or []
    columns = [str(c) for c in (t.get("columns") or [])]
    if not columns and rows_in and isinstance(rows_in[0], Mapping):
        columns = [str(k) for k in rows_in[0]]
    if not columns:
        problems.append(f"{where} has no columns; left out")
        return None
    fmts = list(t.get("formats") or [])
    fmts += [""] * (len(columns) - len(fmts))
    rows: list[list[str]] = []
    missing = False
    for i, r in enumerate(rows_in if isinstance(rows_in, list) else []):
        if isinstance(r, Mapping):
            cells = [r.get(c) for c in columns]
        elif isinstance(r, Sequence) and not isinstance(r, str):
            cells = list(r)
            if len(cells) > len(columns):
                problems.append(
                    f"{where}: row {i + 1} has {len(cells)} cells for {len(columns)} columns; extra cells dropped"
                )
                cells = cells[: len(columns)]
            cells += [None] * (len(columns) - len(cells))
        else:
            problems.append(f"{where}: row {i + 1} is neither a list nor an object; left out")
            continue
        missing = missing or any(_is_missing(c) for c in cells)
        rows.append([format_cell(c, f) for c, f in zip(cells, fmts)])
    notes = [str(n) for n in (t.get("notes") or []) if n]
    if paper and t.get("note"):
        notes.insert(0, str(t["note"]))
    if missing:
        notes.append(_NA_PAPER_NOTE if paper else _NA_NOTE)
    title = _text(t.get("title")) or _DEFAULT_TITLES.get(tid, tid)
    if paper:
        title = f"Paper: {title}"
    out = _Table(tid, title, _text(t.get("caption")), columns, rows, notes)
    if not paper and t.get("paper"):
        out.paper = _table(tid, t["paper"], problems, paper=True)
    return out


def _picture(key: str, entry: Any, run_dir: Path | None, what: str, problems: list[str]) -> _Picture:
    if not isinstance(entry, Mapping):
        problems.append(f"{what} {key!r}: not an object")
        return _Picture(key, key, "", "", "its entry in results.json is not an object")
    file = entry.get("file")
    title = _text(entry.get("title")) or key
    caption = _text(entry.get("caption"))
    if not isinstance(file, str) or not file:
        problems.append(f"{what} {key!r}: no file named in results.json")
        return _Picture(key, title, "", caption, "no file is named in results.json")
    missing = None
    if run_dir is not None and not (run_dir / file).is_file():
        missing = f"the file {file} is missing"
        problems.append(f"{what} {key!r}: missing file {file}")
    return _Picture(key, title, file, caption, missing)


def _config_text(config: Any) -> str | None:
    if config is None:
        return None
    import yaml

    try:
        return str(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False))
    except yaml.YAMLError:  # a value YAML cannot represent: show JSON instead
        return json.dumps(config, indent=2, ensure_ascii=False, default=str)


def _build(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None) -> _Doc:
    """The report document of ``results`` (the Markdown and HTML are rendered from it).

    Long because: the report's sections in reading order, each a few lines appending to the same
    document."""
    rd = Path(run_dir) if run_dir is not None else None
    run = results.get("run") if isinstance(results.get("run"), Mapping) else {}
    dataset = results.get("dataset") if isinstance(results.get("dataset"), Mapping) else {}
    scale = results.get("scale") if isinstance(results.get("scale"), Mapping) else {}
    name = _text(run.get("name")) or (rd.name if rd is not None else "run")
    doc = _Doc(title=f"frad report: {name}")

    if scale.get("demo") is True:
        facts = _text(scale.get("facts"))
        # the banner states what this run measured, computed from it (a config's note can be stale)
        doc.banners.append(DEMO_BANNER + (f" This run: {facts}." if facts else ""))
    if dataset.get("synthetic") is True:
        doc.banners.append(SYNTHETIC_BANNER)
    doc.warnings = [str(w) for w in (results.get("warnings") or []) if w]

    ds = _text(dataset.get("name")) or NA
    if dataset.get("variant"):
        ds += f" ({dataset['variant']})"
    parts = [f"{format_cell(dataset[k], 'd')} {k}" for k in ("identities", "images") if k in dataset]
    if parts:
        ds += ", " + ", ".join(parts)
    if dataset.get("synthetic") is True:
        ds += ", synthetic"
    network = results.get("network") if isinstance(results.get("network"), Mapping) else {}
    net = _text(network.get("name")) or _text(dataset.get("model")) or NA
    if network.get("architecture") and network.get("architecture") != net:
        net += f" ({network['architecture']})"
    if network.get("weights"):
        net += f", weights {network['weights']}"
    if dataset.get("path"):
        ds += f", from {dataset['path']}"
    doc.meta = [
        ("Network", net),
        ("Dataset", ds),
        ("Run", name),
        ("Created", _text(results.get("created")) or NA),
        ("frad version", _text(results.get("frad_version")) or NA),
        *([("Source commit", _text(results["commit"]))] if results.get("commit") else []),
        ("Config file", _text(run.get("config_file")) or NA),
    ]
    ff = dataset.get("face_finding")
    if isinstance(ff, Mapping):
        if ff.get("searched"):
            share = ff.get("fallback_share")
            doc.meta.append(("Face finding", f"face found in {ff.get('found')} of {ff.get('searched')} images; "
                             f"no face found (centred-box fallback) in {ff.get('fallback')}"
                             + (f" ({format_cell(share, 'pct1')})" if share is not None else "")))
        else:
            doc.meta.append(("Face finding", f"not used: the {ff.get('images')} images were taken as they are "
                             "(already aligned, or resized for a model without alignment)"))
    if isinstance(dataset.get("dropped_identities"), int):
        doc.meta.append(("Identities left out", f"{dataset['dropped_identities']} (fewer than "
                         f"{dataset.get('images_needed_per_identity', '?')} usable images"
                         + (f"; {dataset.get('dropped_images')} images" if dataset.get("dropped_images") else "") + ")"))
    if scale.get("note"):
        doc.meta.append(("Note (from the config)", _text(scale["note"])))

    summary = results.get("summary")
    labels = results.get("summary_labels") if isinstance(results.get("summary_labels"), Mapping) else {}
    if isinstance(summary, Mapping):
        for k, v in summary.items():
            lab = labels.get(k)
            if isinstance(lab, Sequence) and not isinstance(lab, str) and len(lab) == 2:
                doc.summary.append((str(lab[0]), format_cell(v, str(lab[1]))))
            else:
                doc.summary.append((str(k), format_cell(v)))

    tables = results.get("tables")
    if tables is not None and not isinstance(tables, Mapping):
        doc.problems.append("'tables' in results.json is not an object")
    for tid, t in ordered_tables(tables or {}):
        tab = _table(tid, t, doc.problems)
        if tab is not None:
            doc.tables.append(tab)

    for fid, f in ordered_figures(results.get("figures") or {}):
        doc.figures.append(_picture(fid, f, rd, "figure", doc.problems))
    for aid, e in _ordered(results.get("examples") or {}, ()):
        p = _picture(aid, e, rd, "example grid", doc.problems)
        if isinstance(e, Mapping) and not e.get("title"):
            p.title = f"Examples: {aid}"
        doc.examples.append(p)

    stages = results.get("stages")
    if isinstance(stages, Mapping):
        total = 0.0
        for st, rec in stages.items():
            rec = rec if isinstance(rec, Mapping) else {}
            status = _text(rec.get("status")) or NA
            if rec.get("skipped") is True and "skip" not in status.lower():
                status += " (skipped: inputs unchanged)"
            sec = rec.get("seconds")
            if isinstance(sec, (int, float)) and not isinstance(sec, bool) and math.isfinite(sec):
                total += float(sec)
            doc.stages.append([str(st), status, _seconds(sec)])
        if doc.stages:
            doc.stages.append(["Total", "", _seconds(total)])

    doc.config_text = _config_text(run.get("config"))
    doc.config_file = _text(run.get("config_file")) or None
    return doc


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin-bottom:.3em}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.7em 1em;margin:.6em 0;font-weight:600}
.problems{background:#fdecea;border:1px solid #d93025;padding:.5em 1em}
.missing{background:#fdecea;border:1px dashed #d93025;padding:.6em;color:#a50e0e}
table{border-collapse:collapse;margin:.4em 0;font-size:.92em}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}
.pair{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
.paper table{color:#444}.paper th{background:#e8eef7}
.caption,.note{font-size:.88em;color:#444;margin:.2em 0}
.tid{font-size:.75em;color:#777;font-weight:normal}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#333;margin-top:.3em}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dl.meta dt{font-weight:600}
dl.meta dd{margin:0}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
"""


def _e(s: Any) -> str:
    return html.escape(_text(s), quote=True)


def _url(path: str) -> str:
    return quote(path.replace(os.sep, "/"), safe="/")


def _html_table(t: _Table, heading: str, show_id: bool = False) -> list[str]:
    tid = f' <span class="tid">[{_e(t.id)}]</span>' if show_id else ""
    out = [f"<{heading}>{_e(t.title)}{tid}</{heading}>"]
    if t.caption:
        out.append(f'<p class="caption">{_e(t.caption)}</p>')
    out.append("<table>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in t.columns) + "</tr></thead>")
    out.append("<tbody>")
    for r in t.rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{_e(n)}</p>' for n in t.notes]
    return out


def _html_picture(p: _Picture, prefix: str) -> list[str]:
    out = [f'<section id="{_e(_anchor(prefix, p.id))}">',
           f'<h3>{_e(p.title)} <span class="tid">[{_e(p.id)}]</span></h3>']
    if p.missing:
        out.append(f'<p class="missing">Not shown: {_e(p.missing)}.</p>')
        if p.caption:
            out.append(f'<p class="caption">{_e(p.caption)}</p>')
    else:
        out.append(f'<figure><img src="{_e(_url(p.file))}" alt="{_e(p.title)}">')
        out.append(f"<figcaption>{_e(p.caption)}</figcaption></figure>")
    out.append("</section>")
    return out


def render_html(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS; images by relative path)."""
    doc = _build(results, run_dir)
    o: list[str] = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    f"<title>{_e(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
                    f"<h1>{_e(doc.title)}</h1>"]
    o += [f'<div class="banner" role="alert">{_e(b)}</div>' for b in doc.banners]
    o.append('<dl class="meta">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in doc.meta) + "</dl>")
    if doc.warnings:
        o.append('<div class="banner" role="alert"><strong>Read these numbers with care:</strong><ul>')
        o += [f"<li>{_e(w)}</li>" for w in doc.warnings]
        o.append("</ul></div>")
    if doc.problems:
        o.append('<div class="problems"><strong>Problems found while building this report:</strong><ul>')
        o += [f"<li>{_e(p)}</li>" for p in doc.problems]
        o.append("</ul></div>")
    nav = [("summary", "Summary", doc.summary), ("tables", "Tables", doc.tables), ("figures", "Figures", doc.figures),
           ("examples", "Examples", doc.examples), ("abbreviations", "Abbreviations", ABBREVIATIONS),
           ("stages", "Stage timings", doc.stages), ("config", "Configuration", doc.config_text)]
    o.append("<nav><ul>" + "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t, x in nav if x) + "</ul></nav>")

    if doc.summary:
        o.append('<section id="summary"><h2>Summary</h2><table><tbody>')
        o += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in doc.summary]
        o.append("</tbody></table></section>")
    if doc.tables:
        o.append('<section id="tables"><h2>Tables</h2>')
        for t in doc.tables:
            o.append(f'<section id="{_e(_anchor("table", t.id))}">')
            o.append('<div class="pair"><div class="measured">')
            o += _html_table(t, "h3", show_id=True)
            o.append("</div>")
            if t.paper is not None:
                o.append('<div class="paper">')
                o += _html_table(t.paper, "h4")
                o.append("</div>")
            o.append("</div></section>")
        o.append("</section>")
    if doc.figures:
        o.append('<section id="figures"><h2>Figures</h2>')
        for p in doc.figures:
            o += _html_picture(p, "figure")
        o.append("</section>")
    if doc.examples:
        o.append('<section id="examples"><h2>Example adversarial faces</h2>')
        for p in doc.examples:
            o += _html_picture(p, "example")
        o.append("</section>")
    o.append('<section id="abbreviations"><h2>Abbreviations</h2><dl class="meta">')
    o += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in ABBREVIATIONS]
    o.append("</dl></section>")
    if doc.stages:
        o.append('<section id="stages"><h2>Stage timings</h2><table>')
        o.append("<thead><tr><th>Stage</th><th>Status</th><th>Time</th></tr></thead><tbody>")
        o += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in doc.stages]
        o.append("</tbody></table></section>")
    if doc.config_text is not None:
        o.append('<section id="config"><h2>Configuration</h2>')
        if doc.config_file:
            o.append(f'<p class="caption">From {_e(doc.config_file)}, as resolved for this run.</p>')
        o.append(f"<details><summary>Show the full configuration</summary><pre>{_e(doc.config_text)}</pre></details>")
        o.append("</section>")
    o += ["</body>", "</html>", ""]
    return "\n".join(o)


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _m(s: Any) -> str:
    """Inline Markdown text: special characters escaped, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(_text(s).split()))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(_m(h) or " " for h in header) + " |",
           "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(_m(c) for c in r) + " |" for r in rows]
    return out


def _md_picture(p: _Picture) -> list[str]:
    out = [f"### {_m(p.title)} \\[{_m(p.id)}\\]", ""]
    if p.missing:
        out.append(f"> **Not shown:** {_m(p.missing)}.")
    else:
        out.append(f"![{_m(p.title)}]({_url(p.file)})")
    if p.caption:
        out += ["", _m(p.caption)]
    return out + [""]


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(results: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None) -> str:
    """The report as Markdown: the same content, tables as pipe tables, figures as image links."""
    doc = _build(results, run_dir)
    o: list[str] = [f"# {_m(doc.title)}", ""]
    for b in doc.banners:
        o += [f"> **Warning:** {_m(b)}", ""]
    o += [f"- **{_m(k)}:** {_m(v)}" for k, v in doc.meta] + [""]
    if doc.warnings:
        o += ["**Read these numbers with care:**", ""] + [f"- {_m(w)}" for w in doc.warnings] + [""]
    if doc.problems:
        o += ["**Problems found while building this report:**", ""]
        o += [f"- {_m(p)}" for p in doc.problems] + [""]
    if doc.summary:
        o += ["## Summary", ""] + _md_table(["Measure", "Value"], [list(kv) for kv in doc.summary]) + [""]
    if doc.tables:
        o += ["## Tables", ""]
        for t in doc.tables:
            o += [f"### {_m(t.title)} \\[{_m(t.id)}\\]", ""]
            if t.caption:
                o += [_m(t.caption), ""]
            o += _md_table(t.columns, t.rows) + [""]
            o += [f"*{_m(n)}*" + "  " for n in t.notes]
            if t.notes:
                o.append("")
            if t.paper is not None:
                o += [f"**{_m(t.paper.title)}**", ""] + _md_table(t.paper.columns, t.paper.rows) + [""]
                o += [f"*{_m(n)}*" + "  " for n in t.paper.notes]
                if t.paper.notes:
                    o.append("")
    if doc.figures:
        o += ["## Figures", ""]
        for p in doc.figures:
            o += _md_picture(p)
    if doc.examples:
        o += ["## Example adversarial faces", ""]
        for p in doc.examples:
            o += _md_picture(p)
    o += ["## Abbreviations", ""] + [f"- **{_m(k)}:** {_m(v)}" for k, v in ABBREVIATIONS] + [""]
    if doc.stages:
        o += ["## Stage timings", ""] + _md_table(["Stage", "Status", "Time"], doc.stages) + [""]
    if doc.config_text is not None:
        o += ["## Configuration", ""]
        if doc.config_file:
            o += [f"From {_m(doc.config_file)}, as resolved for this run.", ""]
        fence = _fence(doc.config_text)
        o += [f"{fence}yaml", doc.config_text.rstrip("\n"), fence, ""]
    return "\n".join(o)


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def write_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Render ``<run_dir>/results.json`` into ``report.html`` and ``report.md`` (atomically)."""
    rd = Path(run_dir)
    results = read_results(rd)
    paths = {"html": rd / "report.html", "markdown": rd / "report.md"}
    atomic_write_text(paths["html"], render_html(results, rd))
    atomic_write_text(paths["markdown"], render_markdown(results, rd))
    return paths
