"""The attack grid a run is configured with: one :class:`AttackSpec` per attack (registry
name, targeting, budget, hyper-parameters), a :class:`RunConfig` that expands list values
into a grid, the paper's grid, and the deterministic draw of targets.

Targets are drawn from (seed, source id, attack family) alone, uniformly among the classes
other than the true one, so BIM at every budget shares its targets.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..kinds import AttackKind, Setting
from ..utils.seeding import stable_int
from .base import FixedEpsilonAttack
from .registry import attack_class, create_attack

__all__ = ["AttackSpec", "RunConfig", "paper_grid", "draw_targets", "EXECUTION_PARAMS"]

_TOP_KEYS = ("attacks", "seed", "shard_size", "batch_size", "quantise")
#: Parameters that change how fast an attack runs, never its result: left out of the
#: settings a resumed run must match, and out of the result tables.
EXECUTION_PARAMS = frozenset({"workers", "threads_per_worker", "batched"})
_SPEC_KEYS = ("attack", "targeted", "epsilon", "name")

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
        elif issubclass(cls, FixedEpsilonAttack) or cls.kind is AttackKind.DEEP_FEATURES:
            raise ConfigError(f"{where}: epsilon is required for {self.attack} ({cls.epsilon_units})")
        try:
            self.build()  # checks the parameter names and values
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not self.name:
            self.name = self.default_name()

    @property
    def kind(self) -> AttackKind:
        """What the attack fools (the registered class's ``kind``)."""
        return attack_class(self.attack).kind

    @property
    def setting(self) -> Setting:
        return Setting.of(self.targeted)

    def default_name(self, keys: Sequence[str] | None = None) -> str:
        """``<attack>-<T|U>[-eps<epsilon>][-<param><value>...]``, e.g. ``bim-T-eps0.03-steps30``."""
        parts = [self.attack, self.setting.letter]
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
        rng = np.random.default_rng(stable_int(seed, sid, family))
        out[i] = cand[int(rng.integers(len(cand)))]
    return out
