"""The paper's names and labels of attacks and their groups.

``attack_family('bim') == 'BIM'``, ``attack_label('deep_features', 5.0) == 'DF δ = 5'``,
``delta_label(5.0) == 'δ = 5'`` (the paper's row labels), ``attack_kind``; the settings
(targeted / untargeted) and kinds (classifier / deep features) with their short labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ...utils.ordering import natural_key

__all__ = [
    "SETTINGS",
    "KINDS",
    "SHORT",
    "KIND_LABELS",
    "FAMILY_LABELS",
    "attack_family",
    "attack_kind",
    "attack_label",
    "delta_label",
    "order_labels",
]

SETTINGS: tuple[str, ...] = ("targeted", "untargeted")
KINDS: tuple[str, ...] = ("classifier", "deep_features")
SHORT = {"targeted": "T", "untargeted": "UT"}
KIND_LABELS = {"classifier": "Classifier", "deep_features": "DF"}
FAMILY_LABELS: dict[str, str] = {
    "bim": "BIM",
    "fgsm": "FGSM",
    "mifgsm": "MI-FGSM",
    "mifgsm_l2": "MI-FGSM",
    "cw_l2": "CW",
    "lbfgs": "L-BFGS",
    "deep_features": "DF",
}
_FAMILY_ORDER = ("BIM", "MI-FGSM", "CW")


def attack_family(attack: str) -> str:
    """The paper's name of an attack's family: 'bim' -> 'BIM', 'cw_l2' -> 'CW' (others unchanged)."""
    return FAMILY_LABELS.get(attack, attack)


def attack_kind(attack: str) -> str:
    """'deep_features' for the kNN-guided attack, 'classifier' for every other attack."""
    return "deep_features" if attack == "deep_features" else "classifier"


def delta_label(delta: float) -> str:
    """The paper's row label for a deep-features budget: ``'δ = 5'``."""
    return f"δ = {float(delta):g}"


def attack_label(attack: str, epsilon: float | None = None) -> str:
    """A display label: the family for classifier attacks, ``'DF δ = 5'`` for deep features."""
    if attack == "deep_features" and epsilon is not None and math.isfinite(float(epsilon)):
        return f"DF {delta_label(epsilon)}"
    return attack_family(attack)


def order_labels(labels: Iterable[str], order: Sequence[str] | None) -> list[str]:
    uniq = list(dict.fromkeys(labels))
    first = [x for x in (order if order is not None else _FAMILY_ORDER) if x in uniq]
    return first + sorted((x for x in uniq if x not in first), key=natural_key)

