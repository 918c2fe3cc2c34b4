"""Sanity gates: a run on data that is not faces, or with an FR system near chance, stops.

A run on pictures where the face finder found no face (it then cuts a centred box, the
'fallback') or whose FR system cannot tell people apart still produces every table and
figure, and they mean nothing.  These gates stop it with a message that says what was
measured and which ``checks`` setting lets a user go on anyway (``docs/configuration.md``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import DataError
from .config import ExperimentConfig

__all__ = ["NOT_FOUND", "FEW_REPRESENTATIVE_IMAGES", "face_finding", "check_face_finding", "check_recognition",
           "thin_representatives"]

#: Fewer correctly classified head-training images per identity than this make a medoid or
#: centroid little more than one of its images: the detectors' trajectories rest on it.
FEW_REPRESENTATIVE_IMAGES = 3

#: Alignment methods meaning the face finder found no face in the image.
NOT_FOUND = ("fallback", "none", "error")
#: Alignment methods meaning a detector found the face.
FOUND = ("hog", "hog-up1", "cnn")


def face_finding(counts: Mapping[str, int]) -> dict[str, object]:
    """``{"images", "searched", "found", "fallback", "fallback_share", "methods"}`` from per-method
    counts (images already aligned, or resized for a model without alignment, are not searched)."""
    total = int(sum(counts.values()))
    searched = int(sum(v for k, v in counts.items() if k in FOUND + NOT_FOUND))
    missed = int(sum(v for k, v in counts.items() if k in NOT_FOUND))
    return {"images": total, "searched": searched, "found": searched - missed, "fallback": missed,
            "fallback_share": (missed / searched) if searched else 0.0, "methods": dict(counts)}


def check_face_finding(cfg: ExperimentConfig, counts: Mapping[str, int]) -> dict[str, object]:
    """Stop when the face finder fell back on more than ``checks.max_face_fallback`` of the images."""
    ff = face_finding(counts)
    limit = cfg.checks.max_face_fallback
    if ff["searched"] and float(ff["fallback_share"]) > limit:  # type: ignore[arg-type]
        raise DataError(
            f"the face finder found no face in {ff['fallback']} of {ff['searched']} images "
            f"({100 * float(ff['fallback_share']):.0f}%, more than checks.max_face_fallback = {limit:g}) and fell back "
            "on a centred box: these may not be face photos. If they are faces framed like LFW's, "
            f"go on with --set checks.max_face_fallback={min(1.0, round(float(ff['fallback_share']) + 0.05, 2)):g}"
        )
    return ff


def check_recognition(cfg: ExperimentConfig, auc: float) -> None:
    """Stop when the FR system's verification AUC is below ``checks.min_verification_auc`` (near chance)."""
    limit = cfg.checks.min_verification_auc
    if auc < limit:
        raise DataError(
            f"the FR system is near chance on this data: verification AUC {auc:.3f} (0.5 = chance) is below "
            f"checks.min_verification_auc = {limit:g}, so attacking it would measure nothing. Check the data and "
            "the model; to go on anyway, --set checks.min_verification_auc=0"
        )


def thin_representatives(images_per_class: list[int] | tuple[int, ...]) -> str | None:
    """A warning when the class representatives rest on very few images per identity, else None."""
    counts = sorted(int(c) for c in images_per_class)
    if not counts:
        return None
    median = counts[len(counts) // 2]
    if median >= FEW_REPRESENTATIVE_IMAGES:
        return None
    return (f"the class representatives (medoids and centroids the detectors measure trajectories against) rest on "
            f"about {median} image(s) per identity (median; {counts[0]} to {counts[-1]}): with so few head-training "
            "images per identity the detectors' numbers are fragile. More images per identity, or lower "
            "split.n_natural / split.n_source, leave more for the head")
