"""Which source images a run attacks.

The paper attacks only sources the system recognises: an attack on a source the classifier
(or the FR system) already gets wrong "succeeds" with no change at all and would inflate
success rates, feed unperturbed images to the detectors as adversarials and fill every
table with non-attacks.  Such sources are left out and counted (:class:`SourceSelection`).

``deep_features.max_sources`` caps the deep-features sources *after* they are restricted to
source images (the detectors' test split pools natural and source ids; the cap used to be
drawn from that pool, so it attacked fewer sources than asked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..utils.seeding import seeded_choice

__all__ = ["SourceSelection", "recognised_sources", "deep_features_sources", "FEW_SOURCES"]

#: Fewer sources than this per deep-features attack make Tables 5-6 rest on too few samples.
FEW_SOURCES = 20


@dataclass
class SourceSelection:
    """The source ids to attack, and those left out because the system already misrecognises them."""

    ids: list[str]
    left_out: list[str] = field(default_factory=list)
    system: str = "classifier"

    def summary(self) -> dict[str, Any]:
        return {"attacked": len(self.ids), "left_out_misrecognised": len(self.left_out),
                "left_out_ids": self.left_out[:50], "judged_by": self.system}

    def warning(self) -> str | None:
        if not self.left_out:
            return None
        total = len(self.ids) + len(self.left_out)
        return (f"{len(self.left_out)} of {total} source images were left out of the {self.system} attacks: the "
                f"{self.system} already got them wrong before any attack, so attacking them proves nothing "
                "(they are excluded from attack success, detector training and every table).")


def recognised_sources(source_ids: Sequence[str], labels: np.ndarray, predicted: np.ndarray,
                       system: str = "classifier") -> SourceSelection:
    """Split ``source_ids`` into those the system recognises (``predicted == labels``) and the rest."""
    ok = np.asarray(predicted).ravel() == np.asarray(labels).ravel()
    ids = [str(i) for i in source_ids]
    return SourceSelection([i for i, k in zip(ids, ok) if k], [i for i, k in zip(ids, ok) if not k], system)


def deep_features_sources(
    source_ids: Sequence[str],
    recognised: set[str],
    test_ids: set[str] | None,
    max_sources: int | None,
    seed: int,
) -> list[str]:
    """The deep-features sources: source images (in the detectors' test split unless
    ``test_ids`` is None) that the FR system recognises, capped at ``max_sources`` (seeded)."""
    chosen = sorted(str(i) for i in source_ids if str(i) in recognised and (test_ids is None or str(i) in test_ids))
    if max_sources is not None and len(chosen) > max_sources:
        chosen = seeded_choice(chosen, max_sources, seed, "deep-features sources")
    return chosen
