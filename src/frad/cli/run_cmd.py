"""``frad run`` and ``frad status``: a whole experiment from a config, and where a run stands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run (or resume) an experiment from a YAML config",
        description="Run every stage of an experiment: data and split, features, classifier head, FR system, "
        "attacks, detectors, FR scenarios and the report.  Stages whose inputs did not change are skipped; an "
        "interrupted run resumes where it stopped.",
    )
    p.add_argument("config", help="YAML config file, or the name of a shipped one (demo.yaml, lfw-dlib.yaml, "
                   "vggface2-senet50.yaml; configs/NAME also works outside a checkout); see docs/configuration.md")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<name>)")
    p.add_argument("--data", metavar="DIR", help="override data.path")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a setting, e.g. --set detection.n_bootstrap=200 (YAML value)")
    p.add_argument("--force", metavar="STAGE", action="append", default=[], help="rerun a stage even if up to date")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--executor", metavar="KIND",
                   help="where attack shards run: local (default) or ray[:ADDRESS] (needs frad[ray]); "
                        "overrides the config's executor and never changes results")
    add_json_flag(p)
    p.set_defaults(func=run)

    s = sub.add_parser("status", help="show where a run stands")
    s.add_argument("run_dir", metavar="RUN", help="run folder")
    add_json_flag(s)
    s.set_defaults(func=status)


def parse_overrides(items: list[str]) -> dict[str, object]:
    import yaml

    from ..errors import ConfigError

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. detection.n_bootstrap=200")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    from ..pipeline.config import load_config
    from ..pipeline.run import run_experiment

    overrides = parse_overrides(args.set)
    if args.data:
        overrides["data.path"] = args.data
    if args.executor:
        overrides["executor"] = args.executor
    cfg_path = resolve_config_path(args.config)
    cfg = load_config(cfg_path, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    outcome = run_experiment(cfg, out, config_source=str(cfg_path), force=args.force, until=args.until)
    summary = headline(outcome.run_dir)
    payload = {"run": str(outcome.run_dir), "ran": outcome.ran, "skipped": outcome.skipped,
               "seconds": outcome.seconds, "report": str(outcome.report) if outcome.report else None,
               "summary": summary}
    text = (f"run {cfg.name!r} in {outcome.run_dir}: ran {', '.join(outcome.ran) or 'nothing'}"
            + (f"; skipped {', '.join(outcome.skipped)}" if outcome.skipped else "")
            + "".join(f"\n  {line}" for line in headline_lines(outcome.run_dir))
            + (f"\nreport: {outcome.report}" if outcome.report else ""))
    emit(args, payload, text)
    return 0


def resolve_config_path(name: str) -> Path:
    """The config file ``name`` names: a file on disk as given, else a config shipped inside frad
    (``demo.yaml``, ``demo``, ``configs/demo.yaml``), so the README's commands work outside a checkout."""
    from importlib.resources import files

    p = Path(name).expanduser()
    if p.is_file():
        return p
    parts = Path(name).parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        stem = parts[-1] if parts[-1].endswith((".yaml", ".yml")) else parts[-1] + ".yaml"
        shipped = files("frad.configs") / stem
        if shipped.is_file():
            return Path(str(shipped))
    return p  # load_config names it in its error


def headline(run_dir: Path) -> dict[str, object]:
    """The run's headline numbers (``results.json``'s summary), empty before the report stage."""
    from ..utils.io import read_json

    path = Path(run_dir) / "results.json"
    return dict(read_json(path).get("summary", {})) if path.is_file() else {}


def headline_lines(run_dir: Path) -> list[str]:
    """The headline numbers as the report names and prints them (rates as percentages)."""
    from ..pipeline.report import format_cell
    from ..utils.io import read_json

    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return []
    res = read_json(path)
    labels = res.get("summary_labels") or {}
    out = []
    for k, v in (res.get("summary") or {}).items():
        label, fmt = labels.get(k, (k, ""))
        out.append(f"{label:<58} {format_cell(v, fmt) if fmt else _fmt(v)}")
    return out


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def status(args: argparse.Namespace) -> int:
    from ..pipeline.run import run_status

    st = run_status(args.run_dir)
    lines = [f"run {st['name']!r} in {st['run']}"]
    if st["held_by"] is not None:
        h = st["held_by"]
        lines.append(f"  running now: pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('started', '?')}")
    for s in st["stages"]:
        secs = f"{s['seconds']:.1f} s" if s["seconds"] is not None else ""
        lines.append(f"  {s['stage']:<14} {s['state']:<12} {secs:>10}  {s['title']}")
        sh = s.get("shards")
        if sh:
            lines.append(f"  {'':<14} shards {sh['done']} of {sh['total']} finished (kept; the next run resumes from them)")
        if s.get("error"):
            lines.append(f"  {'':<14} error: {s['error']}")
    lines.append(f"report: {st['report']}" if st["report"] else "report: not written yet")
    emit(args, st, "\n".join(lines))
    return 0
