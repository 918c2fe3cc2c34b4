"""Gradient-sign attacks: FGSM, BIM, MI-FGSM (L-inf, Dong et al.) and MI-FGSM (L2, the paper's eq. 4-5).

All ascend the cross-entropy of the true label (untargeted) or descend that of the target
(targeted), taking the gradient with respect to the input only.  Budgets: L-inf attacks take
fractions of 255 (0.03 = 7.65 grey levels), the L2 form of MI-FGSM an absolute L2 norm in
pixel units.  Step sizes are in pixel units; by default they are relative to the budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import PIXEL_MAX, PIXEL_MIN, FixedEpsilonAttack, RunOutput, _check_mode, _per_sample, clip_l2
from .criteria import Criterion

__all__ = ["FGSM", "BIM", "MIFGSM", "L2MIFGSM", "input_gradient"]


def input_gradient(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of the summed cross-entropy w.r.t. the input only, and the logits (detached)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, classes, reduction="none").sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


class _IterativeGradientAttack(FixedEpsilonAttack):
    """Shared loop: ``steps`` gradient steps, projected onto the budget and [0, 255] after each."""

    steps: int
    rel_stepsize: float | None
    abs_stepsize: float | None

    def __init__(
        self,
        *,
        steps: int = 10,
        rel_stepsize: float | None = None,
        abs_stepsize: float | None = None,
        epsilon_mode: str = "fixed",
        search_steps: int = 10,
        early_stop: bool | None = None,
    ) -> None:
        self.steps = steps
        self.rel_stepsize = rel_stepsize
        self.abs_stepsize = abs_stepsize
        self.epsilon_mode = epsilon_mode
        self.search_steps = search_steps
        self.early_stop = early_stop
        self._check()

    def _check(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"{type(self).__name__}: steps must be an int >= 1, got {self.steps!r}")
        for key in ("rel_stepsize", "abs_stepsize"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"{type(self).__name__}: {key} must be a number > 0 or None, got {v!r}")
        _check_mode(self.epsilon_mode, self.search_steps)
        if self.early_stop is not None and not isinstance(self.early_stop, bool):
            raise ConfigError(f"{type(self).__name__}: early_stop must be True, False or None, got {self.early_stop!r}")

    def default_rel_stepsize(self) -> float:
        return 2.0 / self.steps

    def stepsize(self, epsilon: Tensor, epsilon_max: float) -> Tensor:
        # in float64, then rounded once: the same step as a library given the absolute value
        e = epsilon.double()
        if self.abs_stepsize is not None:
            scale = e / epsilon_max if epsilon_max > 0 else torch.zeros_like(e)
            return (float(self.abs_stepsize) * scale).to(epsilon.dtype)
        rel = self.rel_stepsize if self.rel_stepsize is not None else self.default_rel_stepsize()
        return (float(rel) * e).to(epsilon.dtype)

    # hooks ------------------------------------------------------------------
    def init_state(self, x0: Tensor) -> dict[str, Tensor]:
        return {}

    def update(
        self, x: Tensor, x0: Tensor, grad: Tensor, state: dict[str, Tensor], idx: Tensor | None,
        eps: Tensor, step: Tensor, direction: float,
    ) -> Tensor:
        raise NotImplementedError

    # loop -------------------------------------------------------------------
    def run(
        self, model: nn.Module, x0: Tensor, criterion: Criterion, *, epsilon: Tensor, stepsize: Tensor, early_stop: bool
    ) -> RunOutput:
        n = len(x0)
        direction = -1.0 if criterion.targeted else 1.0
        classes = criterion.classes
        x0 = x0.detach()
        x = x0.clone()
        state = self.init_state(x0)
        its = torch.zeros(n, dtype=torch.long, device=x0.device)
        if not early_stop:
            # one budget and step for the whole batch (fixed mode): scalars are cheaper to apply
            eps_all: Tensor | float = epsilon
            step_all: Tensor | float = stepsize
            if n and bool((epsilon == epsilon[0]).all()) and bool((stepsize == stepsize[0]).all()):
                eps_all, step_all = float(epsilon[0]), float(stepsize[0])
            for _ in range(self.steps):
                grad, _ = input_gradient(model, x, classes)
                x = self.update(x, x0, grad, state, None, eps_all, step_all, direction)  # type: ignore[arg-type]
            its.fill_(self.steps)
            return RunOutput(x, its)
        active = torch.arange(n, device=x0.device)
        for _ in range(self.steps):
            if not len(active):
                break
            xa = x[active]
            grad, logits = input_gradient(model, xa, classes[active])
            keep = ~criterion.subset(active)(logits)
            a = active[keep]
            if len(a):
                x[a] = self.update(xa[keep], x0[a], grad[keep], state, a, epsilon[a], stepsize[a], direction)
                its[a] += 1
            active = a
        return RunOutput(x, its)


class _LinfSign(_IterativeGradientAttack):
    distance = "linf"
    epsilon_units = "fraction_of_255"

    def direction_of(self, grad: Tensor, state: dict[str, Tensor], idx: Tensor | None) -> Tensor:
        return grad

    def update(
        self, x: Tensor, x0: Tensor, grad: Tensor, state: dict[str, Tensor], idx: Tensor | None,
        eps: Tensor, step: Tensor, direction: float,
    ) -> Tensor:
        g = self.direction_of(grad, state, idx).sign()
        # direction is +-1: folding it into the step changes no value; nor does adding
        # alpha x sign in one pass (alpha x +-1 is exact), and the projection runs in place
        if isinstance(step, float):
            x = torch.add(x, g, alpha=direction * step)
        else:
            x = x + direction * _per_sample(step, x.ndim) * g
        return _project_linf_(x, x0, eps)


def _project_linf_(x: Tensor, x0: Tensor, eps: Tensor | float) -> Tensor:
    """:func:`clip_linf` then the pixel range, overwriting ``x`` (the same values, fewer copies)."""
    e = _per_sample(eps.to(x.dtype), x.ndim) if isinstance(eps, Tensor) else eps
    return x.sub_(x0).clamp_(-e, e).add_(x0).clamp_(PIXEL_MIN, PIXEL_MAX)


class BIM(_LinfSign):
    """Basic Iterative Method (Kurakin et al.), L-inf: ``steps`` signed-gradient steps.

    Step size: ``abs_stepsize`` pixels if given, else ``rel_stepsize`` x the budget, by default
    2 x eps / steps (the authors' code).  With ``epsilon_mode='fixed'`` and ``early_stop``
    off it equals foolbox 3's ``LinfBasicIterativeAttack`` with bounds (0, 255).
    """

    name = "bim"
    family = "BIM"


class FGSM(_LinfSign):
    """Fast Gradient Sign Method (Goodfellow et al.): one step of eps x sign(gradient)."""

    name = "fgsm"
    family = "FGSM"

    def __init__(self, *, epsilon_mode: str = "fixed", search_steps: int = 10) -> None:
        self.epsilon_mode = epsilon_mode
        self.search_steps = search_steps
        self.steps = 1
        self.rel_stepsize = 1.0
        self.abs_stepsize = None
        self.early_stop = False
        self._check()


class _Momentum(_IterativeGradientAttack):
    """The momentum of Dong et al. shared by both MI-FGSM forms: ``decay`` and the velocity ``g``."""

    def __init__(
        self,
        *,
        steps: int = 10,
        decay: float = 1.0,
        rel_stepsize: float | None = None,
        abs_stepsize: float | None = None,
        epsilon_mode: str = "fixed",
        search_steps: int = 10,
        early_stop: bool | None = None,
    ) -> None:
        self.decay = decay
        super().__init__(steps=steps, rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize,
                         epsilon_mode=epsilon_mode, search_steps=search_steps, early_stop=early_stop)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0:
            raise ConfigError(f"{type(self).__name__}: decay must be a number >= 0, got {decay!r}")

    def init_state(self, x0: Tensor) -> dict[str, Tensor]:
        return {"g": torch.zeros_like(x0)}


class MIFGSM(_Momentum, _LinfSign):
    """MI-FGSM, L-inf form (Dong et al. 2018): momentum over L1-normalised gradients, sign step.

    ``g <- decay * g + grad / ||grad||_1`` (per sample), ``x <- x + step * sign(g)``, then
    projection onto the budget and [0, 255].  Step size as :class:`BIM` (default 2 x eps /
    steps; Dong et al. use eps / steps: ``rel_stepsize=1/steps``).
    """

    name = "mifgsm"
    family = "MI-FGSM"

    def direction_of(self, grad: Tensor, state: dict[str, Tensor], idx: Tensor | None) -> Tensor:
        return _momentum(grad, state, idx, float(self.decay))


def _momentum(grad: Tensor, state: dict[str, Tensor], idx: Tensor | None, decay: float) -> Tensor:
    l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
    prev = state["g"] if idx is None else state["g"][idx]
    g = decay * prev + grad / _per_sample(l1, grad.ndim)
    if idx is None:
        state["g"] = g
    else:
        state["g"][idx] = g
    return g


class L2MIFGSM(_Momentum):
    """MI-FGSM, L2 form of the paper's equations 4-5, with an absolute L2 budget (pixels).

    ``g <- decay * g + grad / ||grad||_1``, ``x <- x + alpha * g / ||g||_2`` with
    ``alpha = eps / steps`` by default (eq. 5), then projection onto the L2 ball and [0, 255].
    """

    name = "mifgsm_l2"
    family = "MI-FGSM"
    distance = "l2"
    epsilon_units = "pixels"

    def default_rel_stepsize(self) -> float:
        return 1.0 / self.steps

    def update(
        self, x: Tensor, x0: Tensor, grad: Tensor, state: dict[str, Tensor], idx: Tensor | None,
        eps: Tensor, step: Tensor, direction: float,
    ) -> Tensor:
        g = _momentum(grad, state, idx, float(self.decay))
        l2 = g.flatten(1).norm(dim=1).clamp_min(1e-12)
        x = x + direction * (_per_sample(step / l2, x.ndim) * g)  # step: float or per-sample tensor
        return clip_l2(x0, x, eps).clamp_(PIXEL_MIN, PIXEL_MAX)
