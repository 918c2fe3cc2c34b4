"""Running an experiment: stages in order, each skipped when its inputs did not change.

A run folder holds the resolved config (``config.yaml``), one record per stage
(``stages/<stage>.json``: the stage's input fingerprint, status, time taken and a summary),
the stages' own outputs, ``results.json`` and the report.  A stage's fingerprint hashes the
config sections it reads and the fingerprints of the stages it depends on, so changing,
say, the detector settings reruns only the detector stage and what follows.  A stage that
was interrupted resumes from its finished parts (feature chunks, attack shards, trained
detectors), which every long stage writes atomically as it goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..errors import ConfigError, DataError
from ..utils.io import atomic_write_text, read_json, read_json_object, write_json
from ..utils.locking import FolderLock
from ..utils.threads import SMALL_MODEL_THREADS, torch_threads
from .config import ExperimentConfig, config_to_dict, load_config, section_hash
from .context import RunContext
from .stages import STAGES, Stage, deep_features_name

__all__ = ["run", "run_experiment", "run_status", "RunOutcome", "stage_fingerprints", "open_run_config"]

log = logging.getLogger("frad.run")
CONFIG_NAME = "config.yaml"


@dataclass
class RunOutcome:
    run_dir: Path
    ran: list[str]
    skipped: list[str]
    seconds: dict[str, float]
    report: Path | None


def stage_fingerprints(cfg: ExperimentConfig) -> dict[str, str]:
    """Every stage's input fingerprint: its config sections plus its dependencies' fingerprints."""
    out: dict[str, str] = {}
    for st in STAGES:
        out[st.name] = section_hash(st.name, st.version, st.sections(cfg), [out[d] for d in st.depends])
    return out


def _record_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage}.json"


def _read_record(run_dir: Path, stage: str) -> dict[str, Any] | None:
    return read_json_object(_record_path(run_dir, stage))


@contextlib.contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
    """Log to ``<run>/log.txt`` as well as to the terminal while the run lasts."""
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("frad")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _write_config(run_dir: Path, cfg: ExperimentConfig, source: str | None) -> None:
    text = (f"# resolved config of this run (from {source})\n" if source else "") + yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False
    )
    atomic_write_text(run_dir / CONFIG_NAME, text)


def open_run_config(run_dir: str | os.PathLike[str]) -> ExperimentConfig:
    """The config a run folder was made with."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a frad run folder (no {CONFIG_NAME})")
    return load_config(path)


def _run_stages(
    cfg: ExperimentConfig, run_dir: Path, config_source: str | None, force: Sequence[str], until: str | None,
    took_over: dict[str, Any] | None,
) -> tuple[list[str], list[str], dict[str, float]]:
    """Every stage in order, each skipped when up to date; (ran, skipped, seconds per stage)."""
    _write_config(run_dir, cfg, config_source)
    fps = stage_fingerprints(cfg)
    ctx = RunContext(cfg, run_dir)
    ran: list[str] = []
    skipped: list[str] = []
    seconds: dict[str, float] = {}
    with _run_log(run_dir), contextlib.closing(ctx):
        log.info("frad %s: run %r in %s", __version__, cfg.name, run_dir)
        if took_over:
            log.info("took over the run folder from pid %s on %s, which ended without releasing it",
                     took_over.get("pid"), took_over.get("host"))
        ctx.setup()
        for st in STAGES:
            rec = _read_record(run_dir, st.name)
            upstream_ran = any(d in ran for d in st.depends)
            up_to_date = (
                rec is not None
                and rec.get("status") == "done"
                and rec.get("fingerprint") == fps[st.name]
                and st.name not in force
                and not upstream_ran
            )
            if up_to_date:
                log.info("stage %-14s up to date, skipped (done %s, took %.1f s)", st.name, rec.get("finished"), rec.get("seconds", 0))
                skipped.append(st.name)
                ctx.skipped.append(st.name)
                seconds[st.name] = float(rec.get("seconds", 0.0))
            else:
                if rec is not None and rec.get("status") == "running":
                    log.info("stage %-14s resuming an interrupted run", st.name)
                elif rec is not None and rec.get("status") == "failed":
                    log.info("stage %-14s failed last time (%s): running again", st.name, rec.get("error", "?"))
                elif rec is not None and rec.get("fingerprint") != fps[st.name]:
                    log.info("stage %-14s inputs changed since the last run: running again", st.name)
                elif rec is not None and upstream_ran:
                    log.info("stage %-14s running again after %s", st.name, ", ".join(d for d in st.depends if d in ran))
                else:
                    log.info("stage %-14s running", st.name)
                seconds[st.name] = _run_stage(ctx, st, fps[st.name], rec)
                ran.append(st.name)
            if until and st.name == until:
                break
    return ran, skipped, seconds


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str],
    *,
    config_source: str | None = None,
    force: Sequence[str] = (),
    until: str | None = None,
) -> RunOutcome:
    """Run (or resume) every stage of ``cfg`` in ``run_dir``; ``force`` reruns named stages,
    ``until`` stops after the named stage."""
    names = [s.name for s in STAGES]
    for s in [*force, *([until] if until else [])]:
        if s not in names:
            raise ConfigError(f"unknown stage {s!r}; stages: {', '.join(names)}")
    run_dir = Path(run_dir)
    check_data_path(cfg)  # before the run folder exists: a typo in --data leaves nothing behind
    run_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(run_dir, what="run") as lock:  # one driver per run folder; a killed one's lock is stale
        ran, skipped, seconds = _run_stages(cfg, run_dir, config_source, force, until, lock.took_over)
    report = run_dir / "report.html"
    return RunOutcome(run_dir, ran, skipped, seconds, report if report.is_file() else None)


def run(
    config: ExperimentConfig | str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    force: Sequence[str] = (),
    until: str | None = None,
) -> RunOutcome:
    """Run (or resume) a whole experiment from a config object or a YAML file: ``frad run``
    from Python.  ``overrides`` are dotted keys as with ``--set`` (``{"seed": 1}``)."""
    source = None
    if not isinstance(config, ExperimentConfig):
        source = str(config)
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to a config file; change the ExperimentConfig itself instead")
    return run_experiment(config, run_dir, config_source=source, force=force, until=until)


def _run_stage(ctx: RunContext, st: Stage, fingerprint: str, previous: dict[str, Any] | None) -> float:
    path = _record_path(ctx.run_dir, st.name)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    # time already spent on an interrupted attempt counts towards this stage
    carried = float(previous.get("seconds", 0.0)) if previous and previous.get("status") == "running" and previous.get("fingerprint") == fingerprint else 0.0
    write_json(path, {"name": st.name, "title": st.title, "fingerprint": fingerprint, "status": "running",
                      "started": started, "seconds": carried, "frad_version": __version__})
    t0 = time.perf_counter()
    threads = SMALL_MODEL_THREADS if st.small_models and ctx.device.type == "cpu" else None
    try:
        with torch_threads(threads):
            summary = st.run(ctx) or {}
    except BaseException as exc:
        elapsed = carried + time.perf_counter() - t0
        rec = {"name": st.name, "title": st.title, "fingerprint": fingerprint, "status": "running",
               "started": started, "seconds": round(elapsed, 2), "frad_version": __version__}
        if isinstance(exc, Exception):
            # an error, not an interruption: say so, and why, for `frad status`; the next run retries
            rec.update(status="failed", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__,
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            log.error("stage %-14s failed: %s", st.name, rec["error"])
        write_json(path, rec)
        raise
    elapsed = carried + time.perf_counter() - t0
    write_json(path, {"name": st.name, "title": st.title, "fingerprint": fingerprint, "status": "done",
                      "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "seconds": round(elapsed, 2), "frad_version": __version__, "summary": summary})
    log.info("stage %-14s done in %.1f s", st.name, elapsed)
    return elapsed


def check_data_path(cfg: ExperimentConfig) -> None:
    """Stop with one line when ``data.path`` (``--data``) names nothing on disk."""
    d = cfg.data
    if d.source in ("lfw", "folder") and d.path and not Path(d.path).expanduser().exists():
        raise DataError(f"data.path: {d.path} does not exist (expected "
                        + ("an LFW folder or archive" if d.source == "lfw" else "a folder with one sub-folder per identity")
                        + "; --data sets it)")


def _shard_progress(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """Finished shards of an attack stage, from its folder: ``{"done", "total", "per_attack"}``."""
    folder = {"attacks": "classifier", "deep_features": "deep_features"}.get(stage)
    if folder is None:
        return None
    root = run_dir / "attacks" / folder
    try:
        meta = read_json(root / "run.json")
        n = int(meta["inputs"]["n"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cfg = open_run_config(run_dir)
    if stage == "attacks":
        shard_size = cfg.attacks.shard_size
        names = [a.name for a in cfg.attacks.run_config(cfg.seed).attacks]
    else:
        shard_size = cfg.deep_features.shard_size
        d = cfg.deep_features
        names = [deep_features_name(st, delta) for st in d.settings for delta in d.deltas]
    per = max(1, -(-n // shard_size))
    per_attack = {nm: len(list((root / nm).glob("shard-*.csv"))) if (root / nm).is_dir() else 0 for nm in names}
    return {"done": sum(per_attack.values()), "total": per * len(names), "shards_per_attack": per,
            "per_attack": per_attack}


def run_status(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Where a run stands: each stage's state ('done', 'stale', 'running', 'interrupted', 'failed',
    'not run'), time, the error of a failed stage, the shard progress of an interrupted attack
    stage, and which process holds the run now (``held_by``, None when none does)."""
    run_dir = Path(run_dir)
    cfg = open_run_config(run_dir)
    fps = stage_fingerprints(cfg)
    held_by = FolderLock(run_dir).held_by()
    stages = []
    for st in STAGES:
        rec = _read_record(run_dir, st.name)
        if rec is None:
            state = "not run"
        elif rec.get("status") == "running":
            state = "running" if held_by is not None else "interrupted"
        elif rec.get("status") == "failed":
            state = "failed"
        elif rec.get("fingerprint") != fps[st.name]:
            state = "stale"
        else:
            state = "done"
        entry = {"stage": st.name, "title": st.title, "state": state,
                 "seconds": rec.get("seconds") if rec else None,
                 "finished": rec.get("finished") if rec else None,
                 "summary": rec.get("summary") if rec and state == "done" else None,
                 "error": rec.get("error") if rec and state == "failed" else None}
        if state in ("interrupted", "failed"):
            entry["shards"] = _shard_progress(run_dir, st.name)
        stages.append(entry)
    report = run_dir / "report.html"
    return {"run": str(run_dir), "name": cfg.name, "stages": stages, "held_by": held_by,
            "complete": all(s["state"] == "done" for s in stages),
            "report": str(report) if report.is_file() else None}
