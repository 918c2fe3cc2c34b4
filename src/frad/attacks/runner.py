"""Attack runs over a dataset split: the paper's grid as a config, resumable shard by shard.

A run attacks N source images (N x 3 x H x W pixels in [0, 255]) with every attack of a
:class:`RunConfig`.  Sources are cut into shards of ``shard_size``; for each (attack, shard)
the run writes, atomically, ``<out>/<attack name>/shard-NNNNN.npy`` (the float32 adversarials,
clipped to the budget) and then ``shard-NNNNN.csv`` (one row per source: source id, true
label, target, attack and parameters, success on float32 and on uint8-rounded images, norms,
iterations, predicted class).  A shard is complete when its CSV exists; rerunning skips
complete shards (and logs them), so a killed run resumes where it stopped and ends with the
same files as an uninterrupted one.  ``spec.json`` beside each attack's shards and
``run.json`` at the top hold the settings and input/model fingerprints; a folder holding a
run with other settings or inputs is refused rather than mixed.

Targets are drawn deterministically from (seed, source id, attack family), uniformly among
the classes other than the true one, so BIM at every budget shares its targets.
:func:`load_results` reads a run back for the later stages.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..models.base import module_device, module_fingerprint
from ..utils.io import atomic_open, atomic_write_text, read_json, write_json
from ..utils.progress import progress
from .base import AttackResult, FixedEpsilonAttack
from .criteria import Misclassification, TargetedMisclassification
from .deep_features import DeepFeaturesAttack
from .registry import attack_class, create_attack

__all__ = [
    "AttackSpec",
    "RunConfig",
    "paper_grid",
    "draw_targets",
    "run_attacks",
    "load_results",
    "prune_stale",
    "AttackRun",
    "ShardDone",
    "format_success_table",
    "COLUMNS",
]

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
_TOP_KEYS = ("attacks", "seed", "shard_size", "batch_size", "quantise")
#: Parameters that change how fast an attack runs, never its result: left out of the
#: settings a resumed run must match, and out of the result tables.
EXECUTION_PARAMS = frozenset({"workers", "threads_per_worker", "batched"})
_SPEC_KEYS = ("attack", "targeted", "epsilon", "name")


# ------------------------------------------------------------------------ config
@dataclass
class AttackSpec:
    """One attack of a run: registry name, targeting, budget (in the attack's units), hyper-parameters."""

    attack: str
    targeted: bool = False
    epsilon: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        cls = attack_class(self.attack)
        where = f"attack {self.name or self.attack!r}"
        if not isinstance(self.targeted, bool):
            raise ConfigError(f"{where}: targeted must be true or false, got {self.targeted!r}")
        if self.epsilon is not None:
            if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) or not (
                math.isfinite(self.epsilon) and self.epsilon >= 0
            ):
                raise ConfigError(f"{where}: epsilon must be a number >= 0 or null, got {self.epsilon!r}")
            self.epsilon = float(self.epsilon)
        elif issubclass(cls, (FixedEpsilonAttack, DeepFeaturesAttack)):
            raise ConfigError(f"{where}: epsilon is required for {self.attack} ({cls.epsilon_units})")
        try:
            self.build()  # checks the parameter names and values
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not self.name:
            self.name = self.default_name()

    def default_name(self, keys: Sequence[str] | None = None) -> str:
        parts = [self.attack, "T" if self.targeted else "U"]
        if self.epsilon is not None:
            parts.append(f"eps{self.epsilon:g}")
        for k in sorted(self.params if keys is None else keys):
            v = self.params[k]
            parts.append(f"{k}{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}")
        return "-".join(str(p) for p in parts)

    def build(self) -> Any:
        """A fresh attack object with these hyper-parameters."""
        return create_attack(self.attack, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "attack": self.attack, "targeted": self.targeted, "epsilon": self.epsilon,
                "params": dict(self.params)}


@dataclass
class RunConfig:
    """A run's attacks and settings (plain values a YAML file can hold)."""

    attacks: list[AttackSpec]
    seed: int = 0
    shard_size: int = 32
    batch_size: int = 32
    quantise: bool = True

    def __post_init__(self) -> None:
        for key in ("seed", "shard_size", "batch_size"):
            v = getattr(self, key)
            low = 0 if key == "seed" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"run config: {key} must be an int >= {low}, got {v!r}")
        if not isinstance(self.quantise, bool):
            raise ConfigError(f"run config: quantise must be true or false, got {self.quantise!r}")
        if not self.attacks:
            raise ConfigError("run config: attacks must list at least one attack")
        names = [a.name for a in self.attacks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"run config: attack names must be unique; repeated: {', '.join(dup)} (set 'name')")
        bad = [n for n in names if not n or "/" in n or "\\" in n or n.startswith(".")]
        if bad:
            raise ConfigError(f"run config: attack names must be plain folder names, got {bad}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from plain data; in each ``attacks`` entry, list values expand into a grid
        (``steps: [30, 50]`` gives two attacks) and keys other than attack, targeted,
        epsilon and name are the attack's hyper-parameters (also accepted under ``params``,
        the form :meth:`to_dict` writes)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"run config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"run config: unknown key(s) {', '.join(unknown)}; known: {', '.join(_TOP_KEYS)}")
        entries = data.get("attacks")
        if not isinstance(entries, list):
            raise ConfigError("run config: 'attacks' must be a list of attack entries")
        specs: list[AttackSpec] = []
        for i, entry in enumerate(entries):
            specs.extend(_expand(entry, f"attacks[{i}]"))
        return cls(attacks=specs, **{k: data[k] for k in _TOP_KEYS if k != "attacks" and k in data})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> RunConfig:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the run config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "shard_size": self.shard_size, "batch_size": self.batch_size,
                "quantise": self.quantise, "attacks": [a.to_dict() for a in self.attacks]}

    def select(self, names: Sequence[str]) -> RunConfig:
        """The same run restricted to the attacks named."""
        known = {a.name for a in self.attacks}
        missing = [n for n in names if n not in known]
        if missing:
            raise ConfigError(f"run config: no attack named {', '.join(missing)}; known: {', '.join(sorted(known))}")
        return RunConfig([a for a in self.attacks if a.name in set(names)], self.seed, self.shard_size,
                         self.batch_size, self.quantise)


def _expand(entry: Any, where: str) -> list[AttackSpec]:
    if not isinstance(entry, Mapping) or "attack" not in entry:
        raise ConfigError(f"run config: {where} must be a mapping with an 'attack' key, got {entry!r}")
    if "params" in entry:  # the form to_dict writes: hyper-parameters under 'params'
        nested = entry["params"]
        if not isinstance(nested, Mapping):
            raise ConfigError(f"run config: {where}.params must be a mapping, got {nested!r}")
        clash = sorted(set(nested) & set(entry))
        if clash:
            raise ConfigError(f"run config: {where}: {', '.join(clash)} given both in the entry and under params")
        entry = {**{k: v for k, v in entry.items() if k != "params"}, **nested}
    if isinstance(entry["attack"], list):
        raise ConfigError(f"run config: {where}: 'attack' must be one name")
    grid_keys = [k for k, v in entry.items() if isinstance(v, list)]
    for k in grid_keys:
        if not entry[k]:
            raise ConfigError(f"run config: {where}.{k} is an empty list")
    if "name" in entry and any(len(entry[k]) > 1 for k in grid_keys):
        raise ConfigError(f"run config: {where}: 'name' cannot be given for an entry that expands to several attacks")
    specs = []
    for combo in itertools.product(*(entry[k] for k in grid_keys)):
        e = dict(entry)
        e.update(zip(grid_keys, combo))
        params = {k: v for k, v in e.items() if k not in _SPEC_KEYS}
        try:
            spec = AttackSpec(attack=e["attack"], targeted=e.get("targeted", False), epsilon=e.get("epsilon"),
                              params=params, name=e.get("name", ""))
        except ConfigError as exc:
            raise ConfigError(f"run config: {where}: {exc}") from None
        if "name" not in e:
            spec.name = spec.default_name([k for k in grid_keys if k in params])
        specs.append(spec)
    return specs


def paper_grid(
    *, seed: int = 0, shard_size: int = 32, batch_size: int = 32, epsilon_mode: str = "minimal",
    deep_features: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The paper's attacks: BIM and MI-FGSM at eps {0.03, 0.07, 0.1, 0.3} x steps {30, 50},
    CW-L2 with its (foolbox 2) defaults, deep features at delta {5, 7, 10}; each targeted and
    untargeted.  BIM/MI-FGSM search for the smallest successful eps by default, as foolbox 2
    did for the paper."""
    targeted = [True, False]
    eps = [0.03, 0.07, 0.1, 0.3]
    return RunConfig.from_dict({
        "seed": seed, "shard_size": shard_size, "batch_size": batch_size, "quantise": True,
        "attacks": [
            {"attack": "bim", "targeted": targeted, "epsilon": eps, "steps": [30, 50], "epsilon_mode": epsilon_mode},
            {"attack": "mifgsm", "targeted": targeted, "epsilon": eps, "steps": [30, 50], "epsilon_mode": epsilon_mode},
            {"attack": "cw_l2", "targeted": targeted},
            {"attack": "deep_features", "targeted": targeted, "epsilon": [5.0, 7.0, 10.0], **(deep_features or {})},
        ],
    })


# ------------------------------------------------------------------------ targets
def _stable_int(*parts: object) -> int:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def draw_targets(
    seed: int, source_ids: Sequence[Any], family: str, labels: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """One target per source, uniform over ``classes`` minus its true label, determined by
    (seed, source id, attack family) alone (not by order, shard or batch)."""
    classes = np.asarray(classes)
    out = np.empty(len(source_ids), dtype=np.int64)
    for i, (sid, lab) in enumerate(zip(source_ids, np.asarray(labels).tolist())):
        cand = classes[classes != lab]
        if not len(cand):
            raise ConfigError(f"cannot draw a target for source {sid!r}: no class other than its label {lab}")
        rng = np.random.default_rng(_stable_int(seed, sid, family))
        out[i] = cand[int(rng.integers(len(cand)))]
    return out


# ------------------------------------------------------------------------ fingerprints
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


# ------------------------------------------------------------------------ running
@dataclass
class ShardDone:
    """Reported to ``callback`` after each shard: attack name, shard index, status, seconds."""

    attack: str
    shard: int
    status: str  # 'done' or 'skipped'
    seconds: float
    rows: int


def _shard_paths(out: Path, name: str, shard: int) -> tuple[Path, Path]:
    base = out / name / f"shard-{shard:05d}"
    return base.with_suffix(".npy"), base.with_suffix(".csv")


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


def run_attacks(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor | Sequence[int],
    source_ids: Sequence[Any] | None = None,
    classifier: nn.Module | None = None,
    face_model: nn.Module | None = None,
    templates: np.ndarray | Tensor | None = None,
    template_labels: np.ndarray | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[ShardDone], None] | None = None,
) -> list[ShardDone]:
    """Run every attack of ``config`` on the sources, shard by shard, into ``out_dir``.

    ``images``: N x 3 x H x W pixels in [0, 255] (array or tensor; read batch by batch, so a
    memory map works); ``labels``: true classes (classifier indices, which must equal the
    templates' class ids when deep-features attacks run too); ``source_ids``: stable ids of
    the sources (default: their indices).  Classifier attacks need ``classifier`` (pixels ->
    logits); the deep-features attack needs ``face_model`` and ``templates`` (C x D, class
    ids ``template_labels``, default 0..C-1).  Returns what happened to each shard.
    """
    out = Path(out_dir)
    n = len(images)
    if getattr(images, "ndim", 0) != 4:
        raise ValueError(f"images must be N x 3 x H x W pixels, got shape {tuple(getattr(images, 'shape', ()))}")
    labels_np = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    if labels_np.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels_np.shape}")
    ids = [str(i) for i in range(n)] if source_ids is None else [str(s) for s in source_ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} source ids for {n} images")
    if len(set(ids)) != n:
        raise ValueError("source ids must be unique")
    needs_clf = [a.name for a in config.attacks if a.attack != "deep_features"]
    needs_df = [a.name for a in config.attacks if a.attack == "deep_features"]
    if needs_clf and classifier is None:
        raise ConfigError(f"attacks {', '.join(needs_clf[:3])}... need a classifier")
    if needs_df and (face_model is None or templates is None):
        raise ConfigError(f"attacks {', '.join(needs_df[:3])}... need a face_model and templates")
    if device is None:
        ref = classifier if classifier is not None else face_model
        device = module_device(ref) if ref is not None else torch.device("cpu")
    device = torch.device(device)

    tpl_labels = None
    if templates is not None:
        tpl_labels = np.arange(len(templates)) if template_labels is None else np.asarray(template_labels).astype(np.int64)
    clf_classes = None
    if classifier is not None and needs_clf:
        with torch.no_grad():
            was = classifier.training
            classifier.eval()
            k = int(classifier(_batch(images, 0, 1, device)).shape[-1])
            classifier.train(was)
        clf_classes = np.arange(k)

    run_meta = {
        "format": FORMAT_VERSION,
        "inputs": {"n": n, "shape": list(images.shape[1:]), "images": _sha_arrays(images), "labels": _sha_arrays(labels_np),
                   "source_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]},
        "models": {"classifier": _module_fingerprint(classifier) if needs_clf else None,
                   "face_model": _module_fingerprint(face_model) if needs_df else None,
                   "templates": _sha_arrays(templates, tpl_labels) if needs_df else None},
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write(out / "run.json", run_meta, "inputs or models")

    n_shards = math.ceil(n / config.shard_size)
    report: list[ShardDone] = []
    bar = progress(total=len(config.attacks) * n_shards, desc="attack shards", unit="shard")
    try:
        for spec in config.attacks:
            attack = spec.build()
            spec_meta = _spec_meta(spec, config, attack)
            (out / spec.name).mkdir(parents=True, exist_ok=True)
            _check_or_write(out / spec.name / "spec.json", spec_meta, f"settings for attack {spec.name!r}")
            for stale in (out / spec.name).glob(".shard-*.tmp"):  # left by a killed run's unfinished write
                stale.unlink(missing_ok=True)
            is_df = spec.attack == "deep_features"
            classes = np.unique(tpl_labels) if is_df else clf_classes
            targets = draw_targets(config.seed, ids, spec.attack, labels_np, classes) if spec.targeted else None
            skipped: list[int] = []
            with attack if is_df else contextlib.nullcontext():
                for s in range(n_shards):
                    t0 = time.perf_counter()
                    npy, csv_path = _shard_paths(out, spec.name, s)
                    lo, hi = s * config.shard_size, min(n, (s + 1) * config.shard_size)
                    if csv_path.is_file() and npy.is_file():
                        skipped.append(s)
                        report.append(ShardDone(spec.name, s, "skipped", 0.0, hi - lo))
                        bar.update(1)
                        continue
                    advs, rows = _attack_shard(
                        attack, spec, config, images, labels_np, ids, targets, lo, hi, device,
                        classifier=classifier, face_model=face_model, templates=templates, template_labels=tpl_labels,
                    )
                    with atomic_open(npy, "wb") as f:
                        np.save(f, advs, allow_pickle=False)
                    atomic_write_text(csv_path, _csv_text(rows))  # the shard's completion mark
                    done = ShardDone(spec.name, s, "done", time.perf_counter() - t0, hi - lo)
                    report.append(done)
                    bar.update(1)
                    if callback is not None:
                        callback(done)
            if skipped:
                log.info("%s: skipped %d complete shard(s): %s", spec.name, len(skipped), _ranges(skipped))
    finally:
        bar.close()
    return report


def _ranges(xs: list[int]) -> str:
    parts, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):  # type: ignore[operator]
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def _batch(images: Any, b: int, e: int, device: torch.device) -> Tensor:
    """Rows b:e of the source images as float32 pixels on ``device`` (array, memmap or tensor)."""
    if isinstance(images, Tensor):
        return images[b:e].to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(images[b:e]), dtype=torch.float32, device=device)


def _attack_shard(
    attack: Any, spec: AttackSpec, config: RunConfig, images: Any, labels: np.ndarray, ids: list[str],
    targets: np.ndarray | None, lo: int, hi: int, device: torch.device, *, classifier: nn.Module | None,
    face_model: nn.Module | None, templates: Any, template_labels: np.ndarray | None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    advs: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    params_json = json.dumps(
        {k: v for k, v in attack.get_params().items() if k not in EXECUTION_PARAMS}, sort_keys=True, default=str
    )
    for b in range(lo, hi, config.batch_size):
        e = min(hi, b + config.batch_size)
        x = _batch(images, b, e, device)
        y = labels[b:e]
        crit = TargetedMisclassification(targets[b:e]) if targets is not None else Misclassification(y)
        if spec.attack == "deep_features":
            res: AttackResult = attack(face_model, x, crit, epsilons=spec.epsilon, templates=templates,
                                       template_labels=template_labels, quantise=config.quantise)
        else:
            res = attack(classifier, x, crit, epsilons=spec.epsilon, quantise=config.quantise)
        adv = res.clipped[0].detach().float().cpu().numpy()
        if advs is None:
            advs = np.empty((hi - lo, *adv.shape[1:]), dtype=np.float32)
        advs[b - lo:e - lo] = adv
        col = {k: getattr(res, k)[0].detach().cpu().numpy() for k in
               ("success", "predicted", "epsilon_found", "l2", "linf", "changed_share", "iterations", "evaluations")}
        sq = res.success_quantised[0].cpu().numpy() if res.success_quantised is not None else None
        pq = res.predicted_quantised[0].cpu().numpy() if res.predicted_quantised is not None else None
        for j in range(e - b):
            rows.append({
                "source_index": b + j, "source_id": ids[b + j], "true_label": int(y[j]),
                "target": int(targets[b + j]) if targets is not None else -1,
                "attack_name": spec.name, "attack": spec.attack, "targeted": spec.targeted, "mode": res.mode,
                "epsilon": spec.epsilon if spec.epsilon is not None else float("nan"),
                "epsilon_units": res.epsilon_units,
                "success": bool(col["success"][j]),
                "success_quantised": int(sq[j]) if sq is not None else -1,
                "predicted": int(col["predicted"][j]),
                "predicted_quantised": int(pq[j]) if pq is not None else -1,
                "epsilon_found": float(col["epsilon_found"][j]), "l2": float(col["l2"][j]),
                "linf": float(col["linf"][j]), "changed_share": float(col["changed_share"][j]),
                "iterations": int(col["iterations"][j]), "evaluations": int(col["evaluations"][j]),
                "params": params_json,
            })
    if advs is None:  # pragma: no cover - every shard holds at least one source
        raise RuntimeError(f"empty shard {lo}:{hi}")
    return advs, rows


# ------------------------------------------------------------------------ loading
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
