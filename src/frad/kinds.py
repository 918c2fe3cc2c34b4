"""The typed vocabulary every layer shares: an attack's setting and its kind.

``Setting`` (targeted / untargeted) and ``AttackKind`` (classifier / deep features) are
``str``-valued enums: each member *is* its string (``Setting.TARGETED == "targeted"``, the
same hash, ``json.dumps`` writes ``"targeted"``, ``f"{s}"`` gives ``targeted`` and so does
``repr`` inside a container), so JSON files, on-disk keys and folder names, and the stage
fingerprints of earlier runs stay byte-identical while the code passes typed values from
the config to the report instead of string literals or labels parsed back.

>>> Setting.of(True), Setting("untargeted").short, AttackKind.DEEP_FEATURES.label
('targeted', 'UT', 'DF')
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .errors import ConfigError

__all__ = ["Setting", "AttackKind", "SETTINGS", "KINDS"]


class _StrEnum(str, Enum):
    """A str enum whose str, format and repr are its value's (see the module docstring).

    The repr matters: a stage's fingerprint hashes the ``repr`` of its config section (a
    dataclass), so a member must print exactly as the plain string did."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __repr__(self) -> str:
        return repr(str(self.value))

    @classmethod
    def parse(cls, value: Any, what: str = "value") -> Any:
        """The member named by ``value`` (a member or its string); a ConfigError names ``what``."""
        try:
            return cls(value)
        except ValueError:
            allowed = " / ".join(repr(m.value) for m in cls)
            raise ConfigError(f"{what}: one of {allowed} is needed, got {value!r}") from None


class Setting(_StrEnum):
    """Whether an attack aims at a chosen identity (targeted) or at any other (untargeted)."""

    TARGETED = "targeted"
    UNTARGETED = "untargeted"

    @classmethod
    def of(cls, targeted: bool) -> Setting:
        """The setting of an attack run with ``targeted`` (a bool, as attack tables store it)."""
        return cls.TARGETED if bool(targeted) else cls.UNTARGETED

    @property
    def targeted(self) -> bool:
        return self is Setting.TARGETED

    @property
    def short(self) -> str:
        """The figures' and tables' short label: ``T`` / ``UT``."""
        return "T" if self.targeted else "UT"

    @property
    def letter(self) -> str:
        """The letter in attack names (``bim-T-eps0.03``, ``deep_features-U-delta5``): ``T`` / ``U``."""
        return "T" if self.targeted else "U"

    @property
    def heading(self) -> str:
        """``Targeted`` / ``Untargeted`` (a column or panel title)."""
        return str(self.value).capitalize()


class AttackKind(_StrEnum):
    """What an attack fools: the classifier head, or the FR system's k-NN over deep features."""

    CLASSIFIER = "classifier"
    DEEP_FEATURES = "deep_features"

    @property
    def label(self) -> str:
        """The figures' label: ``Classifier`` / ``DF``."""
        return "Classifier" if self is AttackKind.CLASSIFIER else "DF"


#: the settings and kinds in the paper's order
SETTINGS: tuple[Setting, ...] = tuple(Setting)
KINDS: tuple[AttackKind, ...] = tuple(AttackKind)
