"""Attacks by name, so configs (YAML) can name them: ``create_attack('bim', steps=30)``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from ..kinds import AttackKind
from .base import Attack
from .carlini_wagner import CarliniWagnerL2
from .deep_features import DeepFeaturesAttack
from .gradient import BIM, FGSM, L2MIFGSM, MIFGSM
from .lbfgs import LBFGS

__all__ = ["ATTACKS", "list_attacks", "known_attacks", "attack_class", "attack_kind", "create_attack", "attack_parameters"]

#: registry name -> attack class
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (FGSM, BIM, MIFGSM, L2MIFGSM, CarliniWagnerL2, LBFGS, DeepFeaturesAttack)
}


def list_attacks() -> list[str]:
    """The registry names, sorted."""
    return sorted(ATTACKS)


def known_attacks(names: Iterable[str], field: str) -> list[str]:
    """``names`` as a list, each checked to be registered (a ConfigError names ``field``)."""
    out = list(names)
    for n in out:
        if n not in ATTACKS:
            raise ConfigError(f"{field}: unknown attack {n!r}; known: {', '.join(list_attacks())}")
    return out


def attack_class(name: str) -> type[Attack]:
    """The class registered as ``name`` (a ConfigError lists the known names)."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}") from None


def attack_kind(name: str) -> AttackKind:
    """What the attack ``name`` fools (its class's ``kind``): the classifier or the deep features."""
    return attack_class(name).kind


def attack_parameters(name: str) -> list[str]:
    """The keyword hyper-parameters the attack ``name`` accepts."""
    sig = inspect.signature(attack_class(name).__init__)
    return [k for k in sig.parameters if k != "self"]


def create_attack(name: str, **params: Any) -> Attack:
    """Build attack ``name`` with ``params``; unknown parameters raise a ConfigError naming them."""
    known = attack_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"attack {name!r}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return attack_class(name)(**params)
