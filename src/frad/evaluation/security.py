"""Security evaluation: what share of attacks gets through a detector that the attacker knows.

For every detector and attack, targeted or untargeted, at the operating threshold giving
``fpr`` (5%) false positives on natural images, :func:`security_evaluation` runs the attack
twice from the same sources -- non-adaptive (on the FR system alone) and adaptive (on the
:class:`~frad.evaluation.adaptive.GuardedModel` of the FR system and the detector) -- and
:func:`summarise_attack` reports, on float32 and on uint8-rounded adversarials:

- ``through``: the share of *sources* whose adversarial both fools the FR system (target
  reached / identity changed) and is not flagged -- failures count as stopped;
- ``auc``: the detector's AUC between the naturals and the adversarials that fool the FR
  system (NaN when none does);
- ``median_l2`` / ``median_linf``: the perturbation (pixel units) of those adversarials.

Numbers are returned as plain rows (one dict per detector x attack x goal x rounding); this
function does no I/O.

Untargeted adaptive attacks: an attack that ascends the true label's loss on the guarded
model is also pushed towards "flagged" (one of the wrong classes; see
:mod:`frad.evaluation.adaptive`), so on its own it can do worse than the non-adaptive
attack.  The adaptive untargeted result is therefore, per source, the better of two runs on
the guarded model (C&W 2017 attack the runner-up as a target): one with
:class:`~frad.attacks.criteria.UndetectedMisclassification`, one targeted at the source's
runner-up identity -- the one that gets through, the smaller L2 if both do.  The targeted
goal is one run (reaching the target already means "not flagged").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from ..attacks.base import Attack, perturbation_stats, quantise
from ..attacks.deep_features import DeepFeaturesAttack
from ..attacks.criteria import Misclassification, TargetedMisclassification, UndetectedMisclassification
from ..detection.base import threshold_at_fpr
from ..errors import ConfigError, DataError
from ..kinds import SETTINGS, Setting
from .adaptive import DetectorPenalisedEmbedding, GuardedModel, detector_margin
from ..utils.metrics import rank_auc

__all__ = [
    "summarise_attack",
    "security_evaluation",
    "security_curve",
    "non_adaptive_adversarials",
    "adaptive_adversarials",
    "source_outcomes",
    "ROUNDINGS",
]

ROUNDINGS: tuple[str, ...] = ("float32", "uint8")


def summarise_attack(
    natural_scores: ArrayLike,
    threshold: float,
    fooled: ArrayLike,
    scores: ArrayLike,
    l2: ArrayLike,
    linf: ArrayLike,
) -> dict[str, float]:
    """The row of one attack run: ``through``, ``auc``, ``median_l2``, ``median_linf``, counts.

    ``fooled`` (N,) whether each source's adversarial fools the FR system; ``scores`` (N,)
    the detector's scores of those adversarials (flagged where ``score >= threshold``);
    ``l2`` / ``linf`` (N,) their perturbations.  Shares are over all N sources.
    """
    nat = np.asarray(natural_scores, np.float64).ravel()
    f = np.asarray(fooled, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    l2a, lia = np.asarray(l2, np.float64).ravel(), np.asarray(linf, np.float64).ravel()
    if not (f.size == s.size == l2a.size == lia.size):
        raise DataError(f"fooled, scores, l2 and linf must have one entry per source, got "
                        f"{f.size}, {s.size}, {l2a.size}, {lia.size}")
    if f.size == 0:
        raise DataError("no sources to summarise")
    through = f & (s < threshold)
    return {
        "sources": int(f.size),
        "fooled": float(f.mean()),
        "flagged_among_fooled": float((s[f] >= threshold).mean()) if f.any() else float("nan"),
        "through": float(through.mean()),
        "auc": rank_auc(nat, s[f]) if f.any() else float("nan"),
        "median_l2": float(np.median(l2a[f])) if f.any() else float("nan"),
        "median_linf": float(np.median(lia[f])) if f.any() else float("nan"),
    }


def _fooled(fr_model: nn.Module, x: Tensor, classes: Tensor, targeted: bool, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        pred = torch.cat([fr_model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    c = classes.to(pred.device)
    return ((pred == c) if targeted else (pred != c)).cpu().numpy()


def _runner_up(fr_model: nn.Module, x: Tensor, labels: Tensor, batch_size: int) -> Tensor:
    """Per source, the FR system's most likely identity other than its label."""
    with torch.no_grad():
        logits = torch.cat([fr_model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    logits[torch.arange(len(x)), labels.to(logits.device)] = -torch.inf
    return logits.argmax(1).cpu()


def _best_untargeted(
    attack: Attack, eps: Any, guarded: GuardedModel, fr_model: nn.Module, det: Any, thr: float,
    x: Tensor, labels: Tensor, adv_undetected: Tensor, batch_size: int,
) -> Tensor:
    """The adaptive untargeted adversarial per source: of the run with the
    UndetectedMisclassification criterion and the run targeted at the runner-up identity,
    the one that gets through (fools the FR system, not flagged), the smaller L2 if both do."""
    adv_ru = attack(guarded, x, TargetedMisclassification(_runner_up(fr_model, x, labels, batch_size)),
                    epsilons=eps).clipped[0]
    ok = []
    for a in (adv_undetected, adv_ru):
        fooled = _fooled(fr_model, a, labels, False, batch_size)
        ok.append(torch.as_tensor(fooled & (det.score_samples(a, batch_size=batch_size) < thr)))
    l2_u = perturbation_stats(x, adv_undetected)[0].cpu()
    l2_r = perturbation_stats(x, adv_ru)[0].cpu()
    take_ru = (ok[1] & ~ok[0]) | (ok[1] & ok[0] & (l2_r < l2_u)) | (~ok[0] & ~ok[1])
    return torch.where(take_ru.to(x.device)[:, None, None, None], adv_ru, adv_undetected)


def _criteria(classes: Tensor, targeted: bool) -> tuple[Any, Any]:
    """(non-adaptive criterion, adaptive criterion) of a goal."""
    if targeted:
        return TargetedMisclassification(classes), TargetedMisclassification(classes)
    return Misclassification(classes), UndetectedMisclassification(classes)


def non_adaptive_adversarials(
    attack: Attack, eps: Any, fr_model: nn.Module, pixels: Tensor, classes: ArrayLike, *, targeted: bool,
    templates: ArrayLike | None = None, template_labels: ArrayLike | None = None,
) -> Tensor:
    """The attack on the FR system alone (``classes``: labels, or targets when ``targeted``);
    the deep-features attack runs on ``fr_model.backbone`` guided by ``templates``."""
    c = torch.as_tensor(np.asarray(classes)).long()
    crit = _criteria(c, targeted)[0]
    if isinstance(attack, DeepFeaturesAttack):
        if templates is None:
            raise ConfigError("the deep-features attack needs templates")
        tpl = torch.as_tensor(np.asarray(templates, np.float32))
        return attack(fr_model.backbone, pixels, crit, epsilons=eps, templates=tpl,  # type: ignore[union-attr]
                      template_labels=template_labels).clipped[0]
    return attack(fr_model, pixels, crit, epsilons=eps).clipped[0]


def adaptive_adversarials(
    attack: Attack, eps: Any, fr_model: nn.Module, detector: Any, threshold: float, pixels: Tensor,
    classes: ArrayLike, *, targeted: bool, formulation: str = "margin", scale: float = 1.0,
    templates: ArrayLike | None = None, template_labels: ArrayLike | None = None, detector_weight: float = 1.0,
    batch_size: int = 32, margin: Any = None,
) -> Tensor:
    """The attack on the FR system guarded by ``detector`` at ``threshold`` (see the module doc):
    gradient attacks run on the :class:`GuardedModel` (untargeted: the better of the
    undetected-criterion run and the runner-up-target run per source); the deep-features
    attack on the :class:`DetectorPenalisedEmbedding` with weight ``detector_weight``, stopping
    only where the k-NN is fooled and the detector does not flag.  ``margin``: the
    detector's differentiable margin at ``threshold``, if already built."""
    from ..models.base import module_device

    c = torch.as_tensor(np.asarray(classes)).long()
    if margin is None:
        margin = detector_margin(detector, threshold=threshold)
    margin = margin.to(module_device(fr_model))
    crit = _criteria(c, targeted)[1]
    if isinstance(attack, DeepFeaturesAttack):
        if templates is None:
            raise ConfigError("the deep-features attack needs templates")
        tpl = torch.as_tensor(np.asarray(templates, np.float32))
        penalised = DetectorPenalisedEmbedding(fr_model.backbone, margin, weight=detector_weight)  # type: ignore[arg-type]
        return attack(penalised, pixels, crit, epsilons=eps, templates=penalised.pad_templates(tpl),
                      template_labels=template_labels).clipped[0]
    guarded = GuardedModel(fr_model, margin, formulation=formulation, scale=scale)
    adv = attack(guarded, pixels, crit, epsilons=eps).clipped[0]
    if not targeted:
        adv = _best_untargeted(attack, eps, guarded, fr_model, detector, threshold, pixels, c, adv, batch_size)
    return adv


def source_outcomes(
    fr_model: nn.Module, detector: Any, pixels: Tensor, adversarials: Tensor, classes: ArrayLike, *,
    targeted: bool, batch_size: int = 32,
) -> dict[str, dict[str, np.ndarray]]:
    """Per rounding (``float32``, ``uint8``), per source: ``fooled`` (the FR system), the
    detector's ``score``, ``l2`` and ``linf`` (pixels) -- what :func:`summarise_attack` reads."""
    c = torch.as_tensor(np.asarray(classes)).long()
    out: dict[str, dict[str, np.ndarray]] = {}
    for rounding in ROUNDINGS:
        a = quantise(adversarials) if rounding == "uint8" else adversarials
        l2, linf, _ = perturbation_stats(pixels, a)
        out[rounding] = {"fooled": _fooled(fr_model, a, c, targeted, batch_size),
                         "score": np.asarray(detector.score_samples(a, batch_size=batch_size), np.float64),
                         "l2": l2.cpu().numpy().astype(np.float64), "linf": linf.cpu().numpy().astype(np.float64)}
    return out


def security_evaluation(
    fr_model: nn.Module,
    detectors: Mapping[str, Any],
    attacks: Mapping[str, tuple[Attack, Any]],
    pixels: Tensor,
    labels: ArrayLike,
    *,
    natural_pixels: Tensor,
    targets: ArrayLike | None = None,
    fpr: float = 0.05,
    goals: Sequence[str] = (Setting.UNTARGETED, Setting.TARGETED),
    batch_size: int = 32,
    formulation: str = "margin",
    scale: float = 1.0,
    templates: ArrayLike | None = None,
    template_labels: ArrayLike | None = None,
    detector_weight: float = 1.0,
) -> list[dict[str, Any]]:
    """Rows of the security table (see the module doc).

    ``fr_model`` maps pixels to identity logits (FaceClassifier or TemplateScores);
    ``detectors`` maps a name to a fitted frad detector bound to the face model (operated at
    the threshold giving ``fpr`` on ``natural_pixels``, held-out naturals; the detector's own
    ``threshold_`` is left as it is); ``attacks`` maps
    a name to ``(attack, epsilons)`` (one budget; None for an unbounded minimisation
    attack); ``pixels`` (N, 3, H, W) the sources with their ``labels``; ``targets`` the
    targeted run's identities (required when ``goals`` has "targeted").

    Long because: the loop over detectors, attacks and goals builds each attack's two criteria
    (non-adaptive and adaptive) and summarises both in place; its helpers (``_fooled``,
    ``_best_untargeted``, ``summarise_attack``) hold the numbers.
    """
    if fpr <= 0 or fpr >= 1:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}")
    unknown = [g for g in goals if g not in SETTINGS]
    if unknown:
        raise ConfigError(f"goals must be 'untargeted' and/or 'targeted', got {unknown}")
    y = torch.as_tensor(np.asarray(labels)).long()
    if len(y) != len(pixels):
        raise DataError(f"{len(y)} labels for {len(pixels)} sources")
    if Setting.TARGETED in goals:
        if targets is None:
            raise ConfigError("the targeted goal needs targets")
        t = torch.as_tensor(np.asarray(targets)).long()
        if len(t) != len(pixels) or bool((t == y).any()):
            raise DataError("targets must have one identity per source, each differing from its label")
    rows: list[dict[str, Any]] = []
    for dname, det in detectors.items():
        nat_scores = det.score_samples(natural_pixels, batch_size=batch_size)
        thr = threshold_at_fpr(nat_scores, fpr)
        margin = detector_margin(det, threshold=thr)
        for aname, (attack, eps) in attacks.items():
            is_df = isinstance(attack, DeepFeaturesAttack)
            if is_df and templates is None:
                raise ConfigError(f"attack {aname!r} (deep features) needs templates")
            for goal in goals:
                targeted = goal == Setting.TARGETED
                classes = t if targeted else y
                kw: dict[str, Any] = {"templates": templates, "template_labels": template_labels}
                advs = {
                    "non_adaptive": non_adaptive_adversarials(attack, eps, fr_model, pixels, classes,
                                                              targeted=targeted, **kw),
                    "adaptive": adaptive_adversarials(attack, eps, fr_model, det, thr, pixels, classes,
                                                      targeted=targeted, formulation=formulation, scale=scale,
                                                      detector_weight=detector_weight, batch_size=batch_size,
                                                      margin=margin, **kw),
                }
                outcomes = {k: source_outcomes(fr_model, det, pixels, a, classes, targeted=targeted,
                                               batch_size=batch_size) for k, a in advs.items()}
                for rounding in ROUNDINGS:
                    row: dict[str, Any] = {
                        "detector": dname, "attack": aname, "goal": goal, "rounding": rounding,
                        "epsilon": eps, "fpr": fpr, "threshold": thr, "gradient": margin.gradient,
                        "detector_weight": detector_weight if is_df else None,
                        "natural_flagged": float((nat_scores >= thr).mean()),
                    }
                    for k, o in outcomes.items():
                        r = o[rounding]
                        s = summarise_attack(nat_scores, thr, r["fooled"], r["score"], r["l2"], r["linf"])
                        row.update({f"{k}_{m}": v for m, v in s.items() if m != "sources"})
                        row["sources"] = s["sources"]
                    rows.append(row)
    return rows


def security_curve(
    fr_model: nn.Module,
    detectors: Mapping[str, Any],
    attack: Attack,
    budgets: Sequence[Any],
    pixels: Tensor,
    labels: ArrayLike,
    *,
    name: str = "attack",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """The share that gets through against the attack's budget: :func:`security_evaluation`
    rows for ``attack`` at each of ``budgets`` (epsilons; for a budget in steps, pass one
    attack per step count to :func:`security_evaluation` instead).  Keyword arguments go to
    :func:`security_evaluation`."""
    if not budgets:
        raise ConfigError("security_curve: no budgets given")
    rows: list[dict[str, Any]] = []
    for eps in budgets:
        rows += security_evaluation(fr_model, detectors, {name: (attack, eps)}, pixels, labels, **kwargs)
    return rows
