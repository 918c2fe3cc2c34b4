"""``frad demo``: the whole experiment at demo scale, on LFW if it can be found, else on synthetic faces."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ._common import add_json_flag, emit

log = logging.getLogger("frad.demo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo experiment (configs/demo.yaml) end to end",
        description="Find LFW (--data, then $FRAD_LFW_DIR, then frad's cache folder, then download it with "
        "its checksums) and run configs/demo.yaml on it.  With no LFW and no network, run on frad's synthetic "
        "faces instead, and say so.",
    )
    p.add_argument("--data", metavar="DIR", help="LFW folder or archive")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/demo or runs/demo-synthetic)")
    p.add_argument("--synthetic", action="store_true", help="use synthetic faces even if LFW is available")
    p.add_argument("--no-download", action="store_true", help="do not try to download LFW")
    add_json_flag(p)
    p.set_defaults(func=run)


def find_lfw(data: str | None, *, download: bool = True) -> tuple[Path | None, str]:
    """An LFW folder and where it came from, or (None, why not)."""
    from ..data.lfw import fetch_lfw
    from ..errors import FradError
    from ..utils.cache import cache_dir

    if data:
        return Path(data).expanduser(), "--data"
    env = os.environ.get("FRAD_LFW_DIR")
    if env:
        return Path(env).expanduser(), "FRAD_LFW_DIR"
    for candidate in (cache_dir("lfw"), cache_dir("datasets", "lfw") / "data"):
        if any(candidate.glob("*/*/*.jpg")) or any(candidate.glob("*/*.jpg")):
            return candidate, f"frad's cache folder ({candidate})"
    if not download:
        return None, "no LFW given (--data or FRAD_LFW_DIR) or cached, and downloading is off"
    try:
        log.info("LFW not found locally: downloading it (checked against its sha256 sums)")
        return fetch_lfw(), "downloaded (lfw.tgz, original images)"
    except (FradError, OSError) as exc:
        return None, f"no LFW given (--data or FRAD_LFW_DIR) or cached, and the download failed ({exc})"


def run(args: argparse.Namespace) -> int:
    from importlib.resources import as_file, files

    from ..pipeline.config import load_config
    from ..pipeline.run import run_experiment

    overrides: dict[str, object] = {}
    if args.synthetic:
        lfw, why = None, "--synthetic was given"
    else:
        lfw, why = find_lfw(args.data, download=not args.no_download)
    if lfw is not None:
        overrides["data.path"] = str(lfw)
        print(f"frad demo: LFW from {why}: {lfw}")
        default_out = Path("runs") / "demo"
    else:
        overrides["data.source"] = "synthetic"
        overrides["name"] = "demo-synthetic"
        overrides["report.note"] = (
            "SYNTHETIC DATA: procedurally drawn faces made by frad, because " + why + ". "
            "These numbers say nothing about real faces."
        )
        print(f"frad demo: running on SYNTHETIC faces drawn by frad, not real ones: {why}.")
        default_out = Path("runs") / "demo-synthetic"
    with as_file(files("frad.configs") / "demo.yaml") as cfg_path:
        cfg = load_config(cfg_path, overrides)
        outcome = run_experiment(cfg, Path(args.out) if args.out else default_out, config_source=str(cfg_path))
    from .run_cmd import headline, headline_lines

    summary = headline(outcome.run_dir)
    payload = {"run": str(outcome.run_dir), "data": str(lfw) if lfw else None, "synthetic": lfw is None,
               "why": why, "seconds": outcome.seconds, "report": str(outcome.report) if outcome.report else None,
               "summary": summary}
    text = "".join(f"  {line}\n" for line in headline_lines(outcome.run_dir))
    text += f"report: {outcome.report}" if outcome.report else f"run folder: {outcome.run_dir}"
    if lfw is None:
        text = "SYNTHETIC faces (no LFW): the numbers are not about real faces.\n" + text
    emit(args, payload, text)
    return 0
