"""Peer runs: other frad runs shown beside this one in its report (``report.compare_with``).

A run crafts adversarials on its own network only, so "do the paper's orderings hold on
MobileFaceNet as on dlib's ResNet?" or "how do attacks transfer dlib -> MobileFaceNet and
back?" need two runs.  ``report.compare_with`` names the other runs' folders; the report
stage reads each one's ``results.json`` (JSON only, never a pickle; the peer's
``stages/*.json`` records are read only to say whether it changed since) and adds to this
run's results:

- ``peer_runs``: the runs compared (name, network, dataset, when and by which code their
  results were written, folder) and the settings in which each differs from this run;
- ``peer_orderings``: the paper's orderings, one column per network, with their counts
  ("yes (16/16)");
- ``peer_headline``: headline numbers side by side (FR accuracy, best detectors' AUCs,
  attack success rates);
- ``transfer_both_ways``: the transfer rows between this run's network and each peer's in
  both directions (this run's adversarials scored on the peer's network, and the peer's on
  this one's), when the runs scored them (``transfer.models``); ``transfer_at_a_glance``:
  each direction's success on the target side by side, one row per attack and setting;
- a ``peers`` section in ``results.json``: per peer its folder, status, provenance, the
  settings that differ and its warning.

A peer that is missing, unfinished, unreadable, or changed since its results were written
gives one warning naming its folder and what is missing (at the top of the report and in
the log); it never stops the report.  A peer's numbers always come with its run name,
network and the date and commit of its results.  Relative paths are resolved against this
run's folder, so ``../lfw-dlib`` is the sibling run ``runs/lfw-dlib``.

API: ``add_peers(results, compare_with, run_dir) -> results``; ``load_peer(given, run_dir)
-> PeerRun``; ``resolve_peer(given, run_dir) -> Path``; ``orderings_of(results) -> dict``;
``peer_tables(results, peers) -> dict``; ``config_differences(a, b) -> list[str]``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PeerRun", "CLAIMS", "add_peers", "load_peer", "resolve_peer", "orderings_of", "peer_tables",
           "config_differences"]

log = logging.getLogger("frad.run")

RESULTS_NAME = "results.json"
#: The paper's orderings as each run's "Do the paper's orderings hold here?" table states them.
CLAIMS: tuple[tuple[str, str], ...] = (
    ("cw_hardest", "CW is the hardest family to detect"),
    ("untargeted_harder", "Untargeted attacks are harder to detect than targeted"),
    ("lstm_ahead_of_mlp", "LSTM detectors are ahead of MLP detectors"),
)
_COUNT = re.compile(r"in (\d+) of (\d+) comparisons")
_BEST = re.compile(r"^\s*([0-9.]+)\s*\(([^)]*)\)")
#: Settings that do not make two runs' numbers differ in kind (or that differ by design).
_NOT_COMPARED = ("name", "description", "device", "threads", "executor", "model", "transfer", "report", "checks",
                 "data.path", "deep_features.workers")


@dataclass
class PeerRun:
    """One entry of ``report.compare_with``: where it points and what was found there."""

    given: str
    path: Path
    results: dict[str, Any] | None = None
    status: str = "ok"  # ok, changed (usable, with a warning), missing, unfinished, unreadable, self
    warning: str | None = None

    @property
    def usable(self) -> bool:
        return self.results is not None


# ---------------------------------------------------------------------------------------
# finding and reading a peer
# ---------------------------------------------------------------------------------------
def resolve_peer(given: str, run_dir: str | Path) -> Path:
    """The folder ``given`` names: ``~`` expanded, relative paths taken from ``run_dir``."""
    p = Path(given).expanduser()
    if not p.is_absolute():
        p = Path(run_dir) / p
    return p.resolve()


def _stage_states(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((path / "stages").glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict):
            out[p.stem] = rec
    return out


def _stage_names() -> list[str]:
    from .stages import STAGES  # imported late: the report stage imports this module

    return [s.name for s in STAGES]


def _changed_since(states: Mapping[str, Mapping[str, Any]], created: Any) -> list[str]:
    """What in a peer's stage records is newer than its results.json (written at ``created``)."""
    out = []
    for name, rec in states.items():
        status = rec.get("status")
        if status in ("running", "failed"):
            out.append(f"stage {name} {'is running (or was interrupted)' if status == 'running' else 'failed'}")
        elif (name != "report" and isinstance(created, str) and isinstance(rec.get("finished"), str)
              and rec["finished"] > created):
            out.append(f"stage {name} ran again (finished {rec['finished']})")
    return out


def load_peer(given: str, run_dir: str | Path) -> PeerRun:
    """Read the peer run ``given`` (a path from ``report.compare_with``); never raises on a bad
    peer: what is wrong is in ``.warning`` (one sentence naming the folder)."""
    path = resolve_peer(given, run_dir)
    if path.name == RESULTS_NAME and path.is_file():  # the peer's results.json named instead of its folder
        path = path.parent
    where = f"report.compare_with: {given}" + (f" ({path})" if str(path) != given else "")
    if path == Path(run_dir).resolve():
        return PeerRun(given, path, status="self", warning=f"{where} is this run's own folder; left out")
    if not path.is_dir():
        return PeerRun(given, path, status="missing", warning=(
            f"{where}: no such run folder, so nothing of it is shown beside this run (relative paths start "
            "from this run's folder: a sibling run is ../NAME)"))
    states = _stage_states(path)
    rp = path / RESULTS_NAME
    if not rp.is_file():
        if not states and not (path / "config.yaml").is_file():
            return PeerRun(given, path, status="missing", warning=(
                f"{where}: not a frad run folder (no results.json, config.yaml or stage records); nothing of it "
                "is shown"))
        names = _stage_names()
        done = [n for n in names if (states.get(n) or {}).get("status") == "done"]
        busy = [f"{n} {states[n].get('status')}" for n in names
                if (states.get(n) or {}).get("status") in ("running", "failed")]
        return PeerRun(given, path, status="unfinished", warning=(
            f"{where}: the run has not finished (no results.json yet; {len(done)} of {len(names)} stages done"
            + (f", {', '.join(busy)}" if busy else "") + "), so nothing of it is shown; when it has finished, "
            "rebuild this report (frad run CONFIG --force report)"))
    try:
        data = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return PeerRun(given, path, status="unreadable", warning=f"{where}: {rp} is not readable JSON ({exc}); "
                                                                 "nothing of it is shown")
    if not isinstance(data, dict) or not isinstance(data.get("tables"), Mapping):
        return PeerRun(given, path, status="unreadable", warning=(
            f"{where}: {rp} is not a frad results document (no 'tables'); nothing of it is shown"))
    changed = _changed_since(states, data.get("created"))
    if changed:
        return PeerRun(given, path, data, status="changed", warning=(
            f"{where}: the run has changed since its results.json was written ({data.get('created')}): "
            f"{'; '.join(changed)}. Its columns show those earlier results; rebuild its report, then this one"))
    return PeerRun(given, path, data)


# ---------------------------------------------------------------------------------------
# what a results document says
# ---------------------------------------------------------------------------------------
def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _network(res: Mapping[str, Any]) -> str:
    return str(_get(res, "network", "name") or _get(res, "dataset", "model")
               or _get(res, "run", "config", "model", "name") or "?")


def _run_name(res: Mapping[str, Any]) -> str:
    return str(_get(res, "run", "name") or "?")


def _value(cell: Any) -> float | None:
    v = cell.get("value") if isinstance(cell, Mapping) else cell
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return None
    return float(v)


def _table_rows(res: Mapping[str, Any], tid: str) -> list[dict[str, Any]]:
    """A table of a results document as rows keyed by column (list rows and mapping rows)."""
    t = _get(res, "tables", tid)
    if not isinstance(t, Mapping):
        return []
    cols = [str(c) for c in t.get("columns") or []]
    out = []
    for r in t.get("rows") or []:
        if isinstance(r, Mapping):
            out.append(dict(r))
        elif isinstance(r, Sequence) and not isinstance(r, str):
            out.append(dict(zip(cols, r)))
    return out


def orderings_of(res: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The paper's orderings in a results document: claim key -> ``{holds, count, total,
    on_average}``, and ``best`` -> ``{value, configuration, target, meets}``.  Read from
    ``results["orderings"]`` (the detectors' counts), or, for a results.json written before
    it was recorded, from the run's orderings table."""
    raw = res.get("orderings")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(raw, Mapping) and raw:
        for key, _ in CLAIMS:
            v = raw.get(key) or {}
            out[key] = {"holds": v.get("holds"), "count": v.get("count"), "total": v.get("total"),
                        "on_average": v.get("holds_on_average")}
        b = raw.get("best_targeted_macro_auc") or {}
        out["best"] = {"value": b.get("value"), "configuration": b.get("configuration"),
                       "target": b.get("target", 0.9), "meets": b.get("meets_target")}
        return out
    rows = {str(r.get("Claim (the paper)")): r for r in _table_rows(res, "orderings")}
    for key, label in CLAIMS:
        r = rows.get(label) or {}
        m = _COUNT.search(str(r.get("Detail") or ""))
        verdict = r.get("Holds")
        out[key] = {"holds": None if verdict in (None, "n/a") else verdict == "yes",
                    "count": int(m.group(1)) if m else None, "total": int(m.group(2)) if m else None,
                    "on_average": None}
    best = next((r for k, r in rows.items() if k.startswith("Best targeted macro-AUC")), None)
    if best is not None:
        m = _BEST.match(str(best.get("Detail") or ""))
        target = re.search(r">=\s*([0-9.]+)", str(best.get("Claim (the paper)")))
        out["best"] = {"value": float(m.group(1)) if m else None, "configuration": m.group(2) if m else None,
                       "target": float(target.group(1)) if target else 0.9, "meets": best.get("Holds") == "yes"}
    else:
        out["best"] = {"value": None, "configuration": None, "target": 0.9, "meets": None}
    return out


def _claim_cell(v: Mapping[str, Any] | None) -> str:
    if not v or (v.get("holds") is None and not v.get("total")):
        return "n/a"
    count, total = v.get("count"), v.get("total")
    holds = bool(v.get("holds"))
    verdict = "yes" if holds else ("partly" if count else "no")
    text = verdict + (f" ({count}/{total})" if total is not None else "")
    if not holds and v.get("on_average") is not None:
        text += f"; on average {'yes' if v['on_average'] else 'no'}"
    return text


def _best_detector(res: Mapping[str, Any], tid: str) -> tuple[str | None, Any, Any]:
    """(configuration, macro-AUC cell, CW AUC cell) of the best row of Table 1 / 2."""
    best: tuple[str | None, Any, Any] = (None, None, None)
    top = -math.inf
    for r in _table_rows(res, tid):
        v = _value(r.get("Macro-AUC"))
        if v is not None and v > top:
            top = v
            best = (str(next(iter(r.values()))), r.get("Macro-AUC"), r.get("CW"))
    return best


def config_differences(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """Dotted settings whose values differ between two runs' configs (the network, transfer,
    report and speed-only settings left aside)."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(d, Mapping):
            for k, v in d.items():
                key = f"{prefix}{k}"
                if isinstance(v, Mapping) and v:
                    out.update(flat(v, key + "."))
                else:
                    out[key] = v
        return out

    fa, fb = flat(a or {}), flat(b or {})

    def ignored(k: str) -> bool:
        return any(k == n or k.startswith(n + ".") for n in _NOT_COMPARED)

    keys = sorted({k for k in (*fa, *fb) if not ignored(k) and fa.get(k) != fb.get(k)})
    return keys


# ---------------------------------------------------------------------------------------
# the tables
# ---------------------------------------------------------------------------------------
def _cell(v: Any, fmt: str) -> Any:
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, Mapping):
        return {**v, "format": fmt} if "value" in v else None
    return {"value": v, "format": fmt}


def _columns(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    cols = []
    for i, res in enumerate(docs):
        c = f"{_network(res)} ({'this run' if i == 0 else 'run ' + _run_name(res)})"
        while c in cols:
            c += "'"
        cols.append(c)
    return cols


def _dataset_text(res: Mapping[str, Any]) -> str:
    ds = res.get("dataset") if isinstance(res.get("dataset"), Mapping) else {}
    text = str(ds.get("name") or "?") + (f" ({ds['variant']})" if ds.get("variant") else "")
    parts = [f"{ds[k]} {k}" for k in ("identities", "images") if ds.get(k) is not None]
    return text + (", " + ", ".join(parts) if parts else "") + (", synthetic" if ds.get("synthetic") else "")


def _runs_table(res: Mapping[str, Any], peers: Sequence[PeerRun]) -> dict[str, Any]:
    rows = [[_run_name(res), _network(res), _dataset_text(res), res.get("created"), res.get("frad_version"),
             res.get("commit") or "not recorded", "this run"]]
    notes = []
    for p in peers:
        if not p.usable:
            rows.append([p.given, "", "", "", "", "", f"{p.path} ({p.status}: nothing shown; see the warning)"])
            continue
        r = p.results or {}
        rows.append([_run_name(r), _network(r), _dataset_text(r), r.get("created"), r.get("frad_version"),
                     r.get("commit") or "not recorded", str(p.path) + (" (changed since: see the warning)"
                                                                        if p.status == "changed" else "")])
        diff = config_differences(_get(res, "run", "config"), _get(r, "run", "config"))
        notes.append(f"Run {_run_name(r)} differs from this run in: " + (", ".join(diff[:12]) + (
            f" and {len(diff) - 12} more" if len(diff) > 12 else "") if diff else
            "nothing but the network (same data, split, attacks, detectors and seed)") + ".")
    notes.append("Every column of the tables below comes from that run's own results.json, written at the date "
                 "given here; 'commit' is the frad checkout that wrote it ('not recorded' for results.json files "
                 "older than the record). Rebuild this report after a compared run changes.")
    return {"title": "Runs compared in this report (report.compare_with)",
            "columns": ["Run", "Network", "Dataset", "Results written", "frad version", "Commit", "Folder"],
            "rows": rows, "notes": notes}


def _orderings_table(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ords = [orderings_of(d) for d in docs]
    rows: list[list[Any]] = [[label, *[_claim_cell(o.get(key)) for o in ords]] for key, label in CLAIMS]
    target = next((o["best"].get("target") for o in ords if o.get("best", {}).get("target")), 0.9)
    best_cells = []
    for o in ords:
        b = o.get("best") or {}
        if b.get("value") is None:
            best_cells.append("n/a")
        else:
            best_cells.append(f"{'yes' if b.get('meets') else 'no'} ({float(b['value']):.3f}, {b.get('configuration')})")
    rows.append([f"Best targeted macro-AUC >= {target:g}", *best_cells])
    tally = []
    for o in ords:
        known = [o[k]["holds"] for k, _ in CLAIMS if (o.get(k) or {}).get("holds") is not None]
        tally.append(f"{sum(bool(h) for h in known)} of {len(known)}" if known else "n/a")
    rows.append(["Orderings that hold in every comparison", *tally])
    return {"title": "Do the paper's orderings hold, network by network?",
            "columns": ["Claim (the paper)", *_columns(docs)], "rows": rows,
            "notes": ["yes / partly / no (comparisons that went the paper's way / comparisons made): per setting "
                      "and detector configuration for 'CW hardest' (2 x 8 = 16 with the paper's detectors), per "
                      "configuration for 'untargeted harder' (8), per setting and representative x metric for "
                      "'LSTM ahead' (8); 'on average': the claim on the means over configurations.",
                      "Each column is that run's own 'Do the paper's orderings hold here?' table."]}


def _headline_table(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from .presentation import SUMMARY_LABELS

    rows: list[list[Any]] = []

    def add(label: str, values: Sequence[Any], fmt: str = "") -> None:
        if any(v is not None for v in values):
            rows.append([label, *[_cell(v, fmt) for v in values]])

    for key in ("head_top1", "identification_top1", "verification_auc", "verification_threshold"):
        label, fmt = SUMMARY_LABELS[key]
        add(label, [_get(d, "summary", key) for d in docs], fmt)
    for tid, setting in (("table1", "targeted"), ("table2", "untargeted")):
        best = [_best_detector(d, tid) for d in docs]
        add(f"Best detector, {setting} macro-AUC", [b[1] for b in best], ".3f")
        add(f"Best detector, {setting}: configuration", [b[0] for b in best])
        add(f"Best detector, {setting}: its CW AUC", [b[2] for b in best], ".3f")
    for key in ("benchmark_best_targeted", "benchmark_best_targeted_macro_auc", "deployed_detector"):
        label, fmt = SUMMARY_LABELS[key]
        add(label, [_get(d, "summary", key) for d in docs], fmt)
    attacks: dict[str, list[Any]] = {}
    for i, d in enumerate(docs):
        for r in _table_rows(d, "attack_success"):
            attacks.setdefault(str(r.get("Attack")), [None] * len(docs))[i] = r.get("Success (float32)")
    for name, vals in attacks.items():
        add(f"Attack success: {name}", vals, "pct1")
    return {"title": "Headline figures, network by network", "columns": ["Measure", *_columns(docs)],
            "rows": rows, "formats": [""] * (1 + len(docs)),
            "notes": ["Best detector: the configuration with the highest macro-AUC of Table 1 (targeted) or "
                      "Table 2 (untargeted) of each run [95% bootstrap interval]. Attack success: on the network "
                      "the attack was crafted on (float32 adversarials)."]}


def _attack_order(x: Mapping[str, Any]) -> tuple[Any, ...]:
    """Classifier attacks, then deep features by setting; numbers read as numbers (delta5 < delta10)."""
    from ..utils.ordering import natural_key

    df = str(x.get("attack")).startswith("deep_features")
    return (df, str(x.get("setting")) if df else "", natural_key(str(x.get("attack"))))


def _glance_table(directions: Sequence[tuple[str, str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Both directions side by side: one row per (attack, setting), two columns per direction."""
    keys: dict[tuple[str, str], dict[str, Any]] = {}
    for _, _, sel in directions:
        for x in sel:
            keys.setdefault((str(x.get("attack")), str(x.get("setting"))), x)
    order = sorted(keys, key=lambda k: _attack_order(keys[k]))
    by_dir = [{(str(x.get("attack")), str(x.get("setting"))): x for x in sel} for _, _, sel in directions]
    columns, formats = ["Attack", "Setting"], ["", ""]
    for src, dst, _ in directions:
        columns += [f"{src} -> {dst}: success on target", f"{src} -> {dst}: impersonation after"]
        formats += ["pct1", "pct1"]
    rows = []
    for k in order:
        row: list[Any] = [k[0], k[1]]
        for d in by_dir:
            x = d.get(k) or {}
            row += [x.get("success on target"), x.get("impersonation after")]
        rows.append(row)
    return {"title": "Transfer at a glance: each direction's success on the target network",
            "columns": columns, "rows": rows, "formats": formats,
            "notes": ["From the table below (its columns 'success on target' and 'impersonation after'); n/a: the "
                      "run of that direction had no such attack."]}


def _transfer_table(res: Mapping[str, Any], peers: Sequence[PeerRun]) -> dict[str, Any]:
    from ..evaluation.transfer import transfer_table

    base = transfer_table({"rows": []})
    cols = list(base["columns"])
    this_net, this_name = _network(res), _run_name(res)
    mine = _table_rows(res, "transfer")
    rows: list[list[Any]] = []
    notes: list[str] = []
    directions: list[tuple[str, str, list[dict[str, Any]]]] = []
    for p in peers:
        if not p.usable:
            continue
        r = p.results or {}
        net, name = _network(r), _run_name(r)
        if net == this_net:
            notes.append(f"Run {name} is on this run's network ({net}): no transfer between networks to show.")
            continue
        for who, src_rows, src, dst in ((this_name, mine, this_net, net), (name, _table_rows(r, "transfer"), net, this_net)):
            sel = sorted((x for x in src_rows if x.get("source") == src and x.get("target") == dst), key=_attack_order)
            if not sel:
                notes.append(f"{src} -> {dst}: run {who} did not score its adversarials on {dst} (add it to that "
                             "run's transfer.models).")
            else:
                directions.append((src, dst, sel))
            rows += [[who, *[x.get(c) for c in cols]] for x in sel]
    out: dict[str, Any] = {}
    if not rows and not notes:
        return out
    if directions:
        out["transfer_at_a_glance"] = _glance_table(directions)
    out["transfer_both_ways"] = {"title": f"Transfer both ways: {this_net} and "
                     + ", ".join(sorted({_network(p.results or {}) for p in peers if p.usable} - {this_net}) or ["?"]),
            "columns": ["Run", *cols], "rows": rows, "formats": ["", *base["formats"]],
            "notes": [*notes, "Each direction comes from the run that crafted the adversarials (the 'Run' column): "
                              "its own sources, on its own split.", *base["notes"][:2]]}
    return out


def peer_tables(results: Mapping[str, Any], peers: Sequence[PeerRun]) -> dict[str, Any]:
    """The report's tables that set ``results`` beside its usable ``peers``."""
    docs = [results, *[p.results for p in peers if p.usable and p.results is not None]]
    tables: dict[str, Any] = {"peer_runs": _runs_table(results, peers)}
    if len(docs) > 1:
        tables["peer_orderings"] = _orderings_table(docs)
        tables["peer_headline"] = _headline_table(docs)
        tables.update(_transfer_table(results, peers))
    return tables


def add_peers(results: dict[str, Any], compare_with: Sequence[str], run_dir: str | Path) -> dict[str, Any]:
    """``results`` with its peer runs beside it: the tables above, a ``peers`` section and one
    warning per peer that is missing, unfinished, unreadable or changed (nothing when
    ``compare_with`` is empty)."""
    if not compare_with:
        return results
    peers = [load_peer(g, run_dir) for g in compare_with]
    for p in peers:
        if p.warning:
            log.warning("report: %s", p.warning)
    results.setdefault("tables", {}).update(peer_tables(results, peers))
    results["warnings"] = [*(results.get("warnings") or []), *[p.warning for p in peers if p.warning]]
    runs = []
    for p in peers:
        r = p.results or {}
        runs.append({"given": p.given, "path": str(p.path), "status": p.status, "warning": p.warning,
                     **({"name": _run_name(r), "network": _network(r), "created": r.get("created"),
                         "frad_version": r.get("frad_version"), "commit": r.get("commit"),
                         "dataset": r.get("dataset"),
                         "differs": config_differences(_get(results, "run", "config"), _get(r, "run", "config")),
                         "orderings": orderings_of(r)} if p.usable else {})})
    results["peers"] = {"compare_with": list(compare_with), "runs": runs}
    return results
