"""An attack run on disk: shard files, their settings and input fingerprints, and reading
a run back.

For each (attack, shard) a run holds ``<out>/<attack name>/shard-NNNNN.npy`` (the float32
adversarials, clipped to the budget) and then ``shard-NNNNN.csv`` (one row per source: the
columns of :data:`COLUMNS`).  A shard is complete when its CSV exists.  ``spec.json`` beside
each attack's shards and ``run.json`` at the top hold the settings and input/model
fingerprints; a folder holding a run with other settings or inputs is refused rather than
mixed.  :func:`load_results` reads a run back for the later stages.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..models.base import module_fingerprint
from ..utils.io import atomic_open, atomic_write_text, read_json, write_json
from .grid import EXECUTION_PARAMS, AttackSpec, RunConfig

__all__ = ["COLUMNS", "FORMAT_VERSION", "AttackRun", "load_results", "prune_stale", "format_success_table",
           "write_shard", "shard_complete", "check_run_folder", "open_attack_folder", "run_metadata"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1

#: The metadata table's columns and their types, in file order.
COLUMNS: tuple[tuple[str, type], ...] = (
    ("source_index", int),
    ("source_id", str),
    ("true_label", int),
    ("target", int),
    ("attack_name", str),
    ("attack", str),
    ("targeted", bool),
    ("mode", str),
    ("epsilon", float),
    ("epsilon_units", str),
    ("success", bool),
    ("success_quantised", int),
    ("predicted", int),
    ("predicted_quantised", int),
    ("epsilon_found", float),
    ("l2", float),
    ("linf", float),
    ("changed_share", float),
    ("iterations", int),
    ("evaluations", int),
    ("params", str),
)


def _sha_arrays(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, Tensor):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype.str, a.shape)).encode())
        for start in range(0, len(a) if a.ndim else 1, 256):
            h.update(np.ascontiguousarray(a[start:start + 256] if a.ndim else a).tobytes())
    return h.hexdigest()[:16]


def _module_fingerprint(m: nn.Module | None) -> str | None:
    return None if m is None else module_fingerprint(m, type(m).__name__)


def _shard_paths(out: Path, name: str, shard: int) -> tuple[Path, Path]:
    base = out / name / f"shard-{shard:05d}"
    return base.with_suffix(".npy"), base.with_suffix(".csv")


def shard_complete(out: Path, name: str, shard: int) -> bool:
    """Whether shard ``shard`` of attack ``name`` is finished (its CSV, the completion mark, exists)."""
    npy, csv_path = _shard_paths(out, name, shard)
    return csv_path.is_file() and npy.is_file()


def write_shard(out: Path, name: str, shard: int, adversarials: np.ndarray, rows: list[dict[str, Any]]) -> None:
    """Write one finished shard atomically: the adversarials first, then the CSV that marks it complete."""
    npy, csv_path = _shard_paths(out, name, shard)
    with atomic_open(npy, "wb") as f:
        np.save(f, adversarials, allow_pickle=False)
    atomic_write_text(csv_path, _csv_text(rows))


def check_run_folder(out: Path, run_meta: dict[str, Any]) -> None:
    """Create ``out`` and record the run's inputs and models, or refuse a folder that holds another run's."""
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write(out / "run.json", run_meta, "inputs or models")


def open_attack_folder(out: Path, spec: AttackSpec, config: RunConfig, attack: Any) -> None:
    """Create an attack's folder, record its settings (or refuse other settings), and remove
    the temporary files a killed run's unfinished writes left behind."""
    (out / spec.name).mkdir(parents=True, exist_ok=True)
    _check_or_write(out / spec.name / "spec.json", _spec_meta(spec, config, attack), f"settings for attack {spec.name!r}")
    for stale in (out / spec.name).glob(".shard-*.tmp"):
        stale.unlink(missing_ok=True)


def run_metadata(images: Any, labels: np.ndarray, ids: Sequence[str], *, classifier: nn.Module | None,
                 face_model: nn.Module | None, templates: Any, template_labels: np.ndarray | None) -> dict[str, Any]:
    """What ``run.json`` records: the inputs' and models' fingerprints (None for a model no attack uses)."""
    return {
        "format": FORMAT_VERSION,
        "inputs": {"n": len(images), "shape": list(images.shape[1:]), "images": _sha_arrays(images),
                   "labels": _sha_arrays(labels), "source_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]},
        "models": {"classifier": _module_fingerprint(classifier),
                   "face_model": _module_fingerprint(face_model),
                   "templates": None if templates is None else _sha_arrays(templates, template_labels)},
    }


def _fmt(v: Any, typ: type) -> str:
    if typ is bool:
        return "1" if v else "0"
    if typ is float:
        return repr(float(v))
    if typ is int:
        return str(int(v))
    return str(v)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c for c, _ in COLUMNS])
    for r in rows:
        w.writerow([_fmt(r[c], t) for c, t in COLUMNS])
    return buf.getvalue()


def _spec_meta(spec: AttackSpec, config: RunConfig, attack: Any | None = None) -> dict[str, Any]:
    """What ``spec.json`` records for one attack: the settings its shards were made with."""
    attack = spec.build() if attack is None else attack
    spec_dict = spec.to_dict()
    spec_dict["params"] = {k: v for k, v in spec_dict["params"].items() if k not in EXECUTION_PARAMS}
    result_params = {k: v for k, v in attack.get_params().items() if k not in EXECUTION_PARAMS}
    return {"spec": spec_dict, "attack": result_params, "seed": config.seed, "shard_size": config.shard_size,
            "batch_size": config.batch_size, "quantise": config.quantise, "format": FORMAT_VERSION}


def prune_stale(config: RunConfig, out_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the shards of attacks in ``out_dir`` whose recorded settings differ from ``config``'s
    (results of an earlier config under the same name); returns the attack names pruned.

    For pipelines that rerun a changed config in the same folder: attacks whose settings are
    unchanged keep their finished shards, changed ones start again instead of being refused.
    """
    import shutil

    out = Path(out_dir)
    pruned = []
    for spec in config.attacks:
        path = out / spec.name / "spec.json"
        if not path.is_file():
            continue
        try:
            same = read_json(path) == json.loads(json.dumps(_spec_meta(spec, config)))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(out / spec.name)
            pruned.append(spec.name)
            log.info("%s: settings changed since its shards were made; starting it again", spec.name)
    return pruned


def _check_or_write(path: Path, expected: dict[str, Any], what: str) -> None:
    if path.is_file():
        try:
            found = read_json(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable {what} ({exc}); remove the folder to start afresh") from None
        if found != json.loads(json.dumps(expected)):
            diff = sorted(k for k in set(found) | set(expected) if found.get(k) != json.loads(json.dumps(expected)).get(k))
            raise ConfigError(
                f"{path}: this folder holds a run with different {what} ({', '.join(diff)}); use another output folder"
            )
    else:
        write_json(path, expected)


def _parse(value: str, typ: type) -> Any:
    if typ is bool:
        return value == "1"
    if typ is int:
        return int(value)
    if typ is float:
        return float(value)
    return value


@dataclass
class AttackRun:
    """A run read back: one table row per (attack, source), arrays loaded on demand.

    ``table`` maps each column of :data:`COLUMNS` (plus ``shard`` and ``row``, the position
    in its shard file) to a NumPy array; ``specs`` holds each attack's ``spec.json``.
    """

    root: Path
    table: dict[str, np.ndarray]
    specs: dict[str, dict[str, Any]]
    run: dict[str, Any]

    def __len__(self) -> int:
        return len(self.table["source_index"])

    @property
    def attack_names(self) -> list[str]:
        return list(self.specs)

    def rows(self, attack: str) -> np.ndarray:
        """Indices of ``attack``'s rows in the table."""
        if attack not in self.specs:
            raise KeyError(f"no attack {attack!r} in {self.root}; have: {', '.join(self.specs)}")
        return np.flatnonzero(self.table["attack_name"] == attack)

    def adversarials(self, attack: str, *, mmap: bool = True) -> np.ndarray:
        """The float32 adversarials of ``attack`` (rows of :meth:`rows`, in table order)."""
        parts = [arr for _, arr in self.iter_shards(attack, mmap=mmap)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    def iter_shards(self, attack: str, *, mmap: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """(shard index, adversarials of that shard) for ``attack``, in order."""
        idx = self.rows(attack)
        for s in np.unique(self.table["shard"][idx]):
            npy, _ = _shard_paths(self.root, attack, int(s))
            yield int(s), np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)

    def success_rates(self) -> dict[str, dict[str, float]]:
        """Per attack: sources, success rate (float32 and quantised), mean L2/L-inf and
        iterations over the successful ones."""
        out: dict[str, dict[str, float]] = {}
        t = self.table
        for name in self.specs:
            i = self.rows(name)
            s = t["success"][i]
            q = t["success_quantised"][i]
            out[name] = {
                "n": float(len(i)),
                "success": float(s.mean()) if len(i) else float("nan"),
                "success_quantised": float((q == 1).mean()) if len(i) and (q >= 0).all() else float("nan"),
                "l2": float(t["l2"][i][s].mean()) if s.any() else float("nan"),
                "linf": float(t["linf"][i][s].mean()) if s.any() else float("nan"),
                "iterations": float(t["iterations"][i][s].mean()) if s.any() else float("nan"),
            }
        return out


def load_results(out_dir: str | os.PathLike[str], *, attacks: Sequence[str] | None = None) -> AttackRun:
    """Read back the complete shards of a run (the table; arrays on demand)."""
    root = Path(out_dir)
    if not (root / "run.json").is_file():
        raise DataError(f"{root}: not an attack run folder (no run.json)")
    run = read_json(root / "run.json")
    specs: dict[str, dict[str, Any]] = {}
    cols: dict[str, list[Any]] = {c: [] for c, _ in COLUMNS}
    cols["shard"], cols["row"] = [], []
    folders = sorted(p for p in root.iterdir() if (p / "spec.json").is_file())
    if attacks is not None:
        have = {p.name for p in folders}
        missing = [a for a in attacks if a not in have]
        if missing:
            raise DataError(f"{root}: no results for attack(s) {', '.join(missing)}")
        folders = [p for p in folders if p.name in set(attacks)]
    for folder in folders:
        specs[folder.name] = read_json(folder / "spec.json")
        for csv_path in sorted(folder.glob("shard-*.csv")):
            if not csv_path.with_suffix(".npy").is_file():
                continue
            shard = int(csv_path.stem.split("-")[1])
            with open(csv_path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header != [c for c, _ in COLUMNS]:
                    raise DataError(f"{csv_path}: unexpected columns {header}")
                for r, line in enumerate(reader):
                    for (c, typ), v in zip(COLUMNS, line):
                        cols[c].append(_parse(v, typ))
                    cols["shard"].append(shard)
                    cols["row"].append(r)
    types = dict(COLUMNS) | {"shard": int, "row": int}
    table = {c: np.array(v, dtype={bool: bool, int: np.int64, float: np.float64, str: object}[types[c]])
             for c, v in cols.items()}
    for c, typ in types.items():
        if typ is str:
            table[c] = table[c].astype(str) if len(table[c]) else np.zeros(0, dtype=str)
    return AttackRun(root, table, specs, run)


def format_success_table(run: AttackRun) -> str:
    """A plain-text table of success rates per attack (what a run prints at the end)."""
    rates = run.success_rates()
    width = max([len(n) for n in rates] + [6])
    lines = [f"{'attack':<{width}}  {'n':>5}  {'success':>8}  {'uint8':>8}  {'L2':>8}  {'Linf':>6}  {'iters':>6}"]
    for name, r in rates.items():
        lines.append(
            f"{name:<{width}}  {int(r['n']):>5}  {r['success']:>8.1%}  {r['success_quantised']:>8.1%}  "
            f"{r['l2']:>8.2f}  {r['linf']:>6.2f}  {r['iterations']:>6.1f}"
        )
    return "\n".join(lines)
