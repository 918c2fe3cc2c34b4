"""Szegedy et al.'s box-constrained L-BFGS attack (the paper's eq. 1), as foolbox 2 ran it.

For a target class t, SciPy's L-BFGS-B minimises

    ||x' - x||_2^2 / 255^2 + c * CE(model(x'), t)    subject to 0 <= x' <= 255

(distance in units of the pixel range, as foolbox 2).  The line search over ``c`` starts at
``initial_const`` and multiplies it by ``const_growth`` until the result is adversarial,
then bisects between the last failing and the first successful ``c``; the smallest
successful perturbation seen is kept.  Untargeted, t is the most likely class other than
the true one (foolbox 2's choice) and success means any class other than the true one.
One L-BFGS-B problem per image, solved in turn (this attack is not part of the paper's grid).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import Tensor, nn

from ..errors import ConfigError
from .base import PIXEL_MAX, PIXEL_MIN, MinimizationAttack, RunOutput, best_other_class
from .criteria import Criterion

__all__ = ["LBFGS"]


class LBFGS(MinimizationAttack):
    """Box-constrained L-BFGS (Szegedy et al. 2014) with a line search over ``c``."""

    name = "lbfgs"
    family = "L-BFGS"
    distance = "l2"
    epsilon_units = "pixels"

    def __init__(
        self,
        *,
        initial_const: float = 1e-5,
        const_growth: float = 2.0,
        max_const_tries: int = 30,
        bisection_steps: int = 10,
        max_iterations: int = 150,
        history: int = 15,
    ) -> None:
        self.initial_const = initial_const
        self.const_growth = const_growth
        self.max_const_tries = max_const_tries
        self.bisection_steps = bisection_steps
        self.max_iterations = max_iterations
        self.history = history
        if not isinstance(initial_const, (int, float)) or not initial_const > 0:
            raise ConfigError(f"LBFGS: initial_const must be a number > 0, got {initial_const!r}")
        if not isinstance(const_growth, (int, float)) or not const_growth > 1:
            raise ConfigError(f"LBFGS: const_growth must be a number > 1, got {const_growth!r}")
        for key, low in (("max_const_tries", 1), ("bisection_steps", 0), ("max_iterations", 1), ("history", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"LBFGS: {key} must be an int >= {low}, got {v!r}")

    def run(self, model: nn.Module, x0: Tensor, criterion: Criterion) -> RunOutput:
        n = len(x0)
        best = x0.clone()
        its = torch.zeros(n, dtype=torch.long, device=x0.device)
        evals = torch.zeros(n, dtype=torch.long, device=x0.device)
        consts = torch.full((n,), float("nan"), dtype=torch.float64)
        if criterion.targeted:
            targets = criterion.classes
        else:  # untargeted: aim at the most likely other class
            with torch.no_grad():
                targets = best_other_class(model(x0), criterion.classes)
        for i in range(n):
            sub = criterion.subset([i])
            target = int(targets[i])
            adv, nit, nfev, c = self._attack_one(model, x0[i], sub, target)
            its[i], evals[i] = nit, nfev
            if adv is not None:
                best[i], consts[i] = adv, c
        return RunOutput(best, its, evaluations=evals, extra={"const": consts.to(x0.device)})

    def _attack_one(
        self, model: nn.Module, x: Tensor, criterion: Criterion, target: int
    ) -> tuple[Tensor | None, int, int, float]:
        shape, dev, dt = x.shape, x.device, x.dtype
        x_flat = x.detach().double().cpu().numpy().ravel()
        tgt = torch.tensor([target], device=dev)
        scale = (PIXEL_MAX - PIXEL_MIN) ** 2
        bounds = Bounds(np.full_like(x_flat, PIXEL_MIN), np.full_like(x_flat, PIXEL_MAX))
        best: list = [None, np.inf, float("nan")]  # adversarial, its L2 norm, its c
        count = [0, 0]

        def fun(z: np.ndarray, c: float) -> tuple[float, np.ndarray]:
            xz = torch.from_numpy(z).to(device=dev, dtype=dt).view(1, *shape).requires_grad_(True)
            logits = model(xz)
            loss = (xz - x).pow(2).sum() / scale + c * F.cross_entropy(logits, tgt)
            (g,) = torch.autograd.grad(loss, xz)
            return float(loss.detach()), g.detach().double().cpu().numpy().ravel()

        def attempt(c: float) -> bool:
            res = minimize(
                fun, x_flat, args=(c,), jac=True, method="L-BFGS-B", bounds=bounds,
                options={"maxiter": self.max_iterations, "maxcor": self.history},
            )
            count[0] += int(res.nit)
            count[1] += int(res.nfev)
            xa = torch.from_numpy(res.x).to(device=dev, dtype=dt).view(1, *shape).clamp(PIXEL_MIN, PIXEL_MAX)
            with torch.no_grad():
                ok = bool(criterion(model(xa))[0])
            if ok:
                d = float((xa - x).norm())
                if d < best[1]:
                    best[:] = [xa[0], d, c]
            return ok

        c, c_low = float(self.initial_const), 0.0
        for _ in range(self.max_const_tries):
            if attempt(c):
                break
            c_low, c = c, c * float(self.const_growth)
        else:
            return None, count[0], count[1], float("nan")
        c_high = c
        for _ in range(self.bisection_steps):
            mid = (c_low + c_high) / 2
            if attempt(mid):
                c_high = mid
            else:
                c_low = mid
        return best[0], count[0], count[1], best[2]
