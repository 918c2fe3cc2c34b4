"""The paper's names and labels of attacks and their groups.

``attack_family('bim') == 'BIM'``, ``attack_label('deep_features', 5.0) == 'DF δ = 5'``,
``delta_label(5.0) == 'δ = 5'`` (the paper's row labels), ``attack_kind``.  Families and
kinds come from the attacks' own classes (``Attack.family``, ``Attack.kind``), so a new
attack registered in :mod:`frad.attacks.registry` is labelled without an edit here.  The
settings (targeted / untargeted) and kinds (classifier / deep features) are the typed
values of :mod:`frad.kinds`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ...attacks.registry import ATTACKS
from ...kinds import KINDS, SETTINGS, AttackKind
from ...utils.ordering import natural_key

__all__ = [
    "SETTINGS",
    "KINDS",
    "FAMILY_LABELS",
    "attack_family",
    "attack_kind",
    "attack_label",
    "delta_label",
    "verification_row_label",
    "order_labels",
]

#: registry name -> the paper's family name ('bim' -> 'BIM'), from the attack classes (at import)
FAMILY_LABELS: dict[str, str] = {name: cls.family or name for name, cls in ATTACKS.items()}
_FAMILY_ORDER = ("BIM", "MI-FGSM", "CW")


def attack_family(attack: str) -> str:
    """The paper's name of an attack's family: 'bim' -> 'BIM', 'cw_l2' -> 'CW' (others unchanged)."""
    cls = ATTACKS.get(attack)
    return (cls.family or attack) if cls is not None else attack


def attack_kind(attack: str) -> AttackKind:
    """What a registered attack fools (deep features for the kNN-guided attack); an unknown
    name counts as a classifier attack."""
    cls = ATTACKS.get(attack)
    return cls.kind if cls is not None else AttackKind.CLASSIFIER


def delta_label(delta: float) -> str:
    """The paper's row label for a deep-features budget: ``'δ = 5'``."""
    return f"δ = {float(delta):g}"


def attack_label(attack: str, epsilon: float | None = None) -> str:
    """A display label: the family for classifier attacks, ``'DF δ = 5'`` for deep features."""
    if attack_kind(attack) is AttackKind.DEEP_FEATURES and epsilon is not None and math.isfinite(float(epsilon)):
        return f"{attack_family(attack)} {delta_label(epsilon)}"
    return attack_family(attack)


def verification_row_label(attack: str, epsilon: float | None = None) -> str:
    """A row of Tables 3 and 4: ``'δ = 5'`` for the paper's deep-features attack, otherwise
    :func:`attack_label` (e.g. 'CW')."""
    if attack == "deep_features" and epsilon is not None and math.isfinite(float(epsilon)):
        return delta_label(epsilon)
    return attack_label(attack, epsilon)


def order_labels(labels: Iterable[str], order: Sequence[str] | None) -> list[str]:
    """Unique labels: those in ``order`` (default: the paper's BIM, MI-FGSM, CW) first, then
    the rest in natural order."""
    uniq = list(dict.fromkeys(labels))
    first = [x for x in (order if order is not None else _FAMILY_ORDER) if x in uniq]
    return first + sorted((x for x in uniq if x not in first), key=natural_key)
