"""Adversarial attacks on face classifiers and on the FR system's deep features.

One calling convention (foolbox 3's): ``attack(model, inputs, criterion, *, epsilons)`` with
pixels in [0, 255], L-inf budgets as fractions of 255 (0.03 = 7.65 grey levels) and L2
budgets in pixels; every attack returns an :class:`AttackResult`.  :mod:`.grid` configures the
paper's grid, :mod:`.runner` runs it over a dataset split resumably, and :mod:`.shards`
holds its files.
"""

from .base import CHANGE_THRESHOLD, PIXEL_MAX, PIXEL_MIN, Attack, AttackResult, FixedEpsilonAttack, MinimizationAttack
from .carlini_wagner import CarliniWagnerL2
from .criteria import Criterion, Misclassification, TargetedMisclassification, UndetectedMisclassification, get_criterion
from .deep_features import DeepFeaturesAttack, knn_predict
from .gradient import BIM, FGSM, L2MIFGSM, MIFGSM
from .lbfgs import LBFGS
from .registry import ATTACKS, attack_parameters, create_attack, list_attacks
from .grid import AttackSpec, RunConfig, draw_targets, paper_grid
from .runner import ShardDone, run_attacks
from .shards import AttackRun, format_success_table, load_results, prune_stale

# short aliases, as foolbox offers
LinfBasicIterativeAttack = BIM
MomentumIterativeAttack = MIFGSM
L2CarliniWagnerAttack = CarliniWagnerL2

__all__ = [
    "Attack", "AttackResult", "FixedEpsilonAttack", "MinimizationAttack", "PIXEL_MIN", "PIXEL_MAX", "CHANGE_THRESHOLD",
    "Criterion", "Misclassification", "TargetedMisclassification", "UndetectedMisclassification", "get_criterion",
    "FGSM", "BIM", "MIFGSM", "L2MIFGSM", "CarliniWagnerL2", "LBFGS", "DeepFeaturesAttack", "knn_predict",
    "LinfBasicIterativeAttack", "MomentumIterativeAttack", "L2CarliniWagnerAttack",
    "ATTACKS", "create_attack", "list_attacks", "attack_parameters",
    "AttackSpec", "RunConfig", "paper_grid", "draw_targets", "run_attacks", "ShardDone", "load_results", "AttackRun",
    "format_success_table", "prune_stale",
]
