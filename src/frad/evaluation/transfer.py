"""Transfer of adversarial examples between face networks.

An adversarial is crafted on the *source* network's face chip.  Another network cuts its own
chip from the same photograph (its own alignment: dlib's 150 x 150 chip, ArcFace's 112 x 112
template, ...), so the perturbation is carried through the photograph:
:func:`carry_perturbation` maps each pixel of the target chip to the photograph (inverse of
the target's image->chip transform) and on into the source chip (the source's transform),
samples the source perturbation there (bilinear, zero outside the source chip) and adds it
to the target's clean chip.  This is what the target would see if the adversarial chip were
pasted back into the photograph and the photograph re-aligned with the clean image's
landmarks.

:func:`transfer_scores` then scores the carried adversarials on the target network's own FR
system: identification success (untargeted: assigned to another identity than the source's;
targeted: to the attack's target), and impersonation / evasion at the target network's own
verification threshold (:func:`frad.evaluation.scenarios.verification_scenario`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import DataError
from . import scenarios as S

__all__ = ["carry_perturbation", "transfer_scores", "transfer_table"]


def carry_perturbation(
    adversarial: np.ndarray,
    source_chips: np.ndarray,
    target_chips: np.ndarray,
    source_transforms: np.ndarray,
    target_transforms: np.ndarray,
) -> np.ndarray:
    """Carry perturbations from source chips into target chips through the photographs.

    ``adversarial``: N x 3 x Hs x Ws float pixels; ``source_chips``: the clean N x Hs x Ws x 3
    chips they were crafted from; ``target_chips``: the clean N x Ht x Wt x 3 chips of the
    target network; ``*_transforms``: N x 2 x 3 image->chip similarity transforms (x, y with
    pixel centres at integers).  Returns the target's adversarial chips, N x 3 x Ht x Wt
    float pixels clipped to [0, 255].
    """
    adv = np.asarray(adversarial, np.float64)
    n = adv.shape[0]
    if source_chips.shape[0] != n or target_chips.shape[0] != n or len(source_transforms) != n or len(target_transforms) != n:
        raise DataError("carry_perturbation: adversarials, chips and transforms must have the same length")
    if source_chips.shape[1:3] != adv.shape[2:4]:
        raise DataError(f"source chips {source_chips.shape[1:3]} do not match the adversarials {adv.shape[2:4]}")
    delta = adv - np.asarray(source_chips, np.float64).transpose(0, 3, 1, 2)
    ht, wt = target_chips.shape[1:3]
    v, u = np.mgrid[0:ht, 0:wt].astype(np.float64)
    grid = np.stack([u.ravel(), v.ravel()])
    out = np.asarray(target_chips, np.float64).transpose(0, 3, 1, 2).copy()
    for i in range(n):
        Ms, Mt = np.asarray(source_transforms[i], np.float64), np.asarray(target_transforms[i], np.float64)
        img = np.linalg.solve(Mt[:, :2], grid - Mt[:, 2:3])  # target chip -> photograph
        src = Ms[:, :2] @ img + Ms[:, 2:3]  # photograph -> source chip
        coords = np.stack([src[1], src[0]])
        for c in range(3):
            d = ndimage.map_coordinates(delta[i, c], coords, order=1, mode="constant", cval=0.0, prefilter=False)
            out[i, c] += d.reshape(ht, wt)
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def transfer_scores(
    *,
    predicted: np.ndarray,
    clean_predicted: np.ndarray,
    targeted: np.ndarray,
    true_label: np.ndarray,
    target: np.ndarray,
    source_success: np.ndarray,
    assigned: np.ndarray,
    source_embeddings: np.ndarray,
    adversarial_embeddings: np.ndarray,
    source_ids: np.ndarray,
    pool_embeddings: np.ndarray,
    pool_labels: np.ndarray,
    pool_ids: np.ndarray,
    threshold: float,
    metric: str,
    random_state: int = 0,
) -> dict[str, Any]:
    """Scores of one attack's adversarials on one target network (all arrays row-aligned).

    ``predicted`` / ``clean_predicted``: the target's identification of the adversarial and of
    the clean source; ``assigned``: the identity the *source* network assigned the adversarial
    to (impersonation partners come from it, as in the run's own Table 3).
    """
    targeted = np.asarray(targeted, bool)
    ok_src = np.asarray(source_success, bool)
    hit = np.where(targeted, predicted == target, predicted != true_label)
    out: dict[str, Any] = {
        "n": int(len(predicted)),
        "source_success": float(ok_src.mean()) if len(ok_src) else None,
        "clean_accuracy": float(np.mean(clean_predicted == true_label)) if len(predicted) else None,
        "success": float(hit.mean()) if len(hit) else None,
        "success_given_source": float(hit[ok_src].mean()) if ok_src.any() else None,
    }
    for scenario in ("impersonation", "evasion"):
        r = S.verification_scenario(
            scenario, source_embeddings=source_embeddings, adversarial_embeddings=adversarial_embeddings,
            source_labels=true_label, assigned=assigned, source_ids=source_ids, pool_embeddings=pool_embeddings,
            pool_labels=pool_labels, pool_ids=pool_ids, threshold=threshold, success=ok_src, metric=metric,
            random_state=random_state,
        )
        out[scenario] = {k: r.get(k) for k in ("n", "original_pct", "adversarial_pct", "n_successful", "n_without_partner")}
    return out


def transfer_table(results: Mapping[str, Any]) -> dict[str, Any]:
    """The report table: one row per (source network, target network, attack, setting)."""
    rows = []
    for r in results.get("rows", []):
        imp, eva = r.get("impersonation") or {}, r.get("evasion") or {}
        rows.append([
            r["source"], r["target"], r["attack"], r["setting"], r["n"], r["source_success"], r["clean_accuracy"],
            r["success"], r["success_given_source"],
            _pct(imp.get("original_pct")), _pct(imp.get("adversarial_pct")),
            _pct(eva.get("original_pct")), _pct(eva.get("adversarial_pct")),
        ])
    thresholds = ", ".join(f"{k} {v['metric']} {v['threshold']:.3f}" for k, v in (results.get("thresholds") or {}).items())
    return {
        "title": "Transfer between networks: adversarials crafted on the source network, scored on each target",
        "columns": ["source", "target", "attack", "setting", "n", "success on source", "target clean top-1",
                    "success on target", "on target | source success", "impersonation before", "impersonation after",
                    "evasion before", "evasion after"],
        "rows": rows,
        "formats": ["", "", "", "", "d", "pct1", "pct1", "pct1", "pct1", "pct1", "pct1", "pct1", "pct1"],
        "notes": [
            "Success on target: identification by the target's own templates (untargeted: any other identity; "
            "targeted: the attack's target). 'On target | source success': among adversarials that fooled the source.",
            "Impersonation: % of (adversarial, image of the identity the source network assigned it to) pairs the "
            "target accepts at its own verification threshold; evasion: % of (adversarial, other image of the source "
            "identity) pairs it rejects; 'before' = the clean source image in the same pairs. Only adversarials that "
            "succeeded on the source network count, as in Tables 3-4.",
            "The perturbation is carried through the photograph into the target's own chip (its alignment), "
            "bilinearly resampled; target thresholds: " + (thresholds or "n/a") + ".",
        ],
    }


def _pct(v: Any) -> Any:
    return None if v is None else float(v) / 100.0
