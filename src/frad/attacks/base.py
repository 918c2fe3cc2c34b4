"""The attack contract: one calling convention, one result type, two epsilon modes.

Every attack is called as ``attack(model, inputs, criterion, *, epsilons)`` (foolbox 3's
convention): ``model`` is any ``nn.Module`` mapping RGB pixels in [0, 255] (float,
N x 3 x H x W) to logits, e.g. a :class:`~frad.models.classifier.FaceClassifier`;
``criterion`` is a :class:`~frad.attacks.criteria.Misclassification` or
:class:`~frad.attacks.criteria.TargetedMisclassification` (plain labels are promoted to the
former); ``epsilons`` is one budget or a sequence of them.  Units are explicit and fixed per
attack (``epsilon_units``): L-inf budgets are fractions of 255 as in the paper (0.03 = 7.65
grey levels), L2 budgets are absolute, in pixel units.  Norms in results are always in
pixel units.

Two families, as in foolbox 3: :class:`FixedEpsilonAttack` (FGSM, BIM, MI-FGSM) runs once
per budget, either at the budget itself (``epsilon_mode='fixed'``) or searching for the
smallest successful budget up to it by bisection (``'minimal'``, how foolbox 2 ran BIM and
MI-FGSM for the paper); :class:`MinimizationAttack` (CW-L2, L-BFGS) finds a minimal
perturbation once and clips it to each budget.  Attacks take input gradients only: during
an attack the model is in eval mode with ``requires_grad`` off on every parameter, and both
are restored afterwards, so no gradient is left on the weights.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..kinds import AttackKind
from .criteria import Criterion, get_criterion

__all__ = [
    "PIXEL_MIN",
    "PIXEL_MAX",
    "CHANGE_THRESHOLD",
    "AttackResult",
    "Attack",
    "FixedEpsilonAttack",
    "MinimizationAttack",
    "RunOutput",
    "attack_mode",
    "check_inputs",
    "clip_linf",
    "clip_l2",
    "quantise",
    "perturbation_stats",
]

PIXEL_MIN = 0.0
PIXEL_MAX = 255.0
#: A pixel counts as visibly changed when its largest change over R, G, B exceeds this many
#: grey levels (the paper's Figure 9).
CHANGE_THRESHOLD = 5.0

EpsilonMode = Literal["fixed", "minimal"]
Judge = Callable[[Tensor], tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------- helpers
def check_inputs(inputs: Tensor) -> Tensor:
    """Raise unless ``inputs`` is a float N x C x H x W tensor of pixels in [0, 255]."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"attack inputs must be a torch.Tensor of pixels, got {type(inputs).__name__}")
    if inputs.ndim != 4:
        raise ValueError(f"attack inputs must have shape (N, C, H, W), got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"attack inputs must be float pixels in [0, 255], got dtype {inputs.dtype}")
    if inputs.numel():
        lo, hi = float(inputs.min()), float(inputs.max())
        if lo < PIXEL_MIN or hi > PIXEL_MAX or math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"attack inputs must be pixels in [0, 255], got values in [{lo:g}, {hi:g}]")
    return inputs.detach()


def _per_sample(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(-1, *([1] * (ndim - 1)))


def best_other_class(logits: Tensor, exclude: Tensor) -> Tensor:
    """Per sample, the most likely class other than ``exclude`` (the runner-up)."""
    masked = logits.clone()
    masked[torch.arange(len(logits), device=logits.device), exclude] = -math.inf
    return masked.argmax(dim=-1)


def clip_linf(x0: Tensor, x: Tensor, eps: Tensor | float) -> Tensor:
    """Project ``x`` onto the L-inf ball of radius ``eps`` (pixels; scalar or per sample) around ``x0``."""
    if isinstance(eps, Tensor):
        e = _per_sample(eps.to(x.dtype), x.ndim)
        return x0 + torch.clamp(x - x0, min=-e, max=e)
    return x0 + torch.clamp(x - x0, -eps, eps)


def clip_l2(x0: Tensor, x: Tensor, eps: Tensor | float) -> Tensor:
    """Project ``x`` onto the L2 ball of radius ``eps`` (pixels; scalar or per sample) around ``x0``."""
    d = x - x0
    norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    e = eps.to(x.dtype) if isinstance(eps, Tensor) else torch.full_like(norms, float(eps))
    factor = torch.clamp(e / norms, max=1.0)
    return x0 + d * _per_sample(factor, x.ndim)


def quantise(x: Tensor) -> Tensor:
    """Round pixels to integers in [0, 255]: what a saved 8-bit image carries (still float)."""
    return torch.round(x).clamp_(PIXEL_MIN, PIXEL_MAX)


def perturbation_stats(x0: Tensor, x: Tensor, threshold: float = CHANGE_THRESHOLD) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: L2 and L-inf norm of ``x - x0`` (pixels) and the share of pixels whose
    largest change over the channels exceeds ``threshold`` grey levels."""
    d = (x - x0).detach()
    l2 = d.flatten(1).norm(dim=1)
    linf = d.abs().flatten(1).amax(dim=1) if d.shape[1:].numel() else torch.zeros(len(d), device=d.device)
    changed = (d.abs().amax(dim=1) > threshold).flatten(1).float().mean(dim=1)
    return l2, linf, changed


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration of an attack, restored afterwards.

    A model in training mode (dropout, batch statistics) would make the attack chase noise:
    it is switched to eval with a warning, as foolbox warns.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    if model.training:
        warnings.warn(
            f"{type(model).__name__} is in training mode; attacking it in eval mode (restored afterwards)",
            stacklevel=4,  # the attack's caller (through __call__ and this context manager)
        )
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was
        for p, was in flags:
            p.requires_grad_(was)


def _epsilon_list(epsilons: Any, allow_none: bool) -> tuple[list[float | None], bool]:
    if isinstance(epsilons, Tensor) and epsilons.ndim == 0:
        epsilons = epsilons.item()
    if isinstance(epsilons, (str, bytes)):
        raise ValueError(f"epsilons must be a number or a sequence of numbers, got {epsilons!r}")
    scalar = epsilons is None or isinstance(epsilons, (int, float, np.floating, np.integer))
    values = [epsilons] if scalar else list(epsilons)
    if not values:
        raise ValueError("epsilons must not be empty")
    out: list[float | None] = []
    for e in values:
        if e is None:
            if not allow_none:
                raise ValueError("this attack needs a budget: epsilons must be numbers, not None")
            out.append(None)
            continue
        if isinstance(e, (bool, np.bool_, str, bytes)):
            raise ValueError(f"epsilons must be numbers, got {e!r}")
        try:
            e = float(e)
        except (TypeError, ValueError):
            raise ValueError(f"epsilons must be numbers, got {e!r}") from None
        if not math.isfinite(e) or e < 0:
            raise ValueError(f"epsilons must be finite and >= 0, got {e}")
        out.append(e)
    return out, scalar


def classifier_judge(model: nn.Module, criterion: Criterion) -> Judge:
    """Success and predicted class of a batch of candidate adversarials on a classifier."""

    def judge(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            logits = model(x)
        return criterion(logits), logits.argmax(dim=-1)

    return judge


# --------------------------------------------------------------------------- results
@dataclass
class AttackResult:
    """What an attack returns: per budget k and sample i.

    ``raw[k]`` is the attack's output, ``clipped[k]`` that output projected onto budget k and
    the pixel range (what success is judged on); ``success[k, i]`` on the float32 clipped
    adversarial and, with ``quantise``, ``success_quantised[k, i]`` after rounding to uint8
    levels.  Norms are of ``clipped[k] - inputs`` in pixel units; ``changed_share`` is the
    share of pixels whose largest change over the channels exceeds ``change_threshold``.
    ``epsilon_found`` is the budget that produced the adversarial (the smallest successful
    one in 'minimal' mode, the perturbation's own norm for minimisation attacks; NaN where
    the attack failed), in the attack's ``epsilon_units``.  ``iterations`` counts the steps
    that produced the returned adversarial, ``evaluations`` all gradient evaluations spent.

    Unpacking gives foolbox's triple ``raw, clipped, success`` (bare tensors when a single
    epsilon was given).
    """

    attack: str
    name: str
    targeted: bool
    mode: str
    distance: str
    epsilon_units: str
    epsilons: tuple[float | None, ...]
    scalar: bool
    raw: list[Tensor]
    clipped: list[Tensor]
    success: Tensor
    predicted: Tensor
    l2: Tensor
    linf: Tensor
    changed_share: Tensor
    iterations: Tensor
    evaluations: Tensor
    epsilon_found: Tensor
    success_quantised: Tensor | None = None
    predicted_quantised: Tensor | None = None
    change_threshold: float = CHANGE_THRESHOLD
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        if self.scalar:
            return iter((self.raw[0], self.clipped[0], self.success[0]))
        return iter((self.raw, self.clipped, self.success))

    @property
    def adversarials(self) -> Tensor:
        """The clipped adversarials of the only budget (raises if several were given)."""
        if len(self.clipped) != 1:
            raise ValueError(f"{len(self.clipped)} budgets were attacked; use .clipped[k]")
        return self.clipped[0]

    def success_rate(self, quantised: bool = False) -> list[float]:
        """Share of successful samples per budget (float32 adversarials, or quantised ones)."""
        s = self.success_quantised if quantised else self.success
        if s is None:
            raise ValueError("the attack ran without quantise=True: no quantised success")
        return [float(v) for v in s.float().mean(dim=1).cpu()] if s.shape[1] else [float("nan")] * len(s)

    def summary(self) -> str:
        parts = []
        for k, eps in enumerate(self.epsilons):
            q = "" if self.success_quantised is None else f", quantised {self.success_rate(True)[k]:.1%}"
            parts.append(f"eps={eps}: success {self.success_rate()[k]:.1%}{q}")
        return f"{self.attack} [{self.mode}]: " + "; ".join(parts)


@dataclass
class RunOutput:
    """What one run of an attack's core loop returns (per sample)."""

    x: Tensor
    iterations: Tensor
    evaluations: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- attacks
class Attack(ABC):
    """Base class: keyword-only hyper-parameters (stored unchanged), a generic repr."""

    #: short registry name ('bim', 'cw_l2', ...)
    name: ClassVar[str] = "attack"
    #: 'linf' or 'l2': how budgets are measured and enforced
    distance: ClassVar[str] = "linf"
    #: 'fraction_of_255' (L-inf, as in the paper) or 'pixels' (absolute)
    epsilon_units: ClassVar[str] = "fraction_of_255"
    #: what the attack fools: the classifier head (called with the classifier), or the FR
    #: system's k-NN over deep features (called with the face model and the class templates)
    kind: ClassVar[AttackKind] = AttackKind.CLASSIFIER
    #: the paper's name of the attack's family in tables and figures ('BIM', 'CW'; '' = the name)
    family: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as stored."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def to_pixels(self, epsilon: float) -> float:
        """A budget in this attack's units -> pixel units."""
        return epsilon * PIXEL_MAX if self.epsilon_units == "fraction_of_255" else epsilon

    def from_pixels(self, value: Tensor) -> Tensor:
        return value / PIXEL_MAX if self.epsilon_units == "fraction_of_255" else value

    def clip(self, x0: Tensor, x: Tensor, eps_pixels: Tensor | float | None) -> Tensor:
        """Project onto the budget (pixels) and the pixel range."""
        if eps_pixels is not None:
            x = clip_linf(x0, x, eps_pixels) if self.distance == "linf" else clip_l2(x0, x, eps_pixels)
        return x.clamp(PIXEL_MIN, PIXEL_MAX)

    @staticmethod
    def _prepare(inputs: Tensor, criterion: Any) -> tuple[Tensor, Criterion]:
        x = check_inputs(inputs)
        crit = get_criterion(criterion).to(x.device)
        if len(crit) != len(x):
            raise ValueError(f"criterion has {len(crit)} classes for {len(x)} inputs")
        return x, crit

    def _finish(
        self,
        *,
        x: Tensor,
        judge: Judge,
        targeted: bool,
        mode: str,
        epsilons: list[float | None],
        scalar: bool,
        raws: list[Tensor],
        clippeds: list[Tensor],
        iterations: list[Tensor],
        evaluations: list[Tensor],
        eps_found: list[Tensor],
        quantise_check: bool,
        extra: dict[str, list[Tensor]] | None = None,
    ) -> AttackResult:
        succ, pred, succ_q, pred_q, l2s, linfs, shares = [], [], [], [], [], [], []
        for c in clippeds:
            s, p = judge(c)
            succ.append(s)
            pred.append(p)
            if quantise_check:
                sq, pq = judge(quantise(c))
                succ_q.append(sq)
                pred_q.append(pq)
            l2, linf, share = perturbation_stats(x, c)
            l2s.append(l2)
            linfs.append(linf)
            shares.append(share)
        found = [torch.where(s, f, torch.full_like(f, float("nan"))) for s, f in zip(succ, eps_found)]
        return AttackResult(
            attack=repr(self),
            name=self.name,
            targeted=targeted,
            mode=mode,
            distance=self.distance,
            epsilon_units=self.epsilon_units,
            epsilons=tuple(epsilons),
            scalar=scalar,
            raw=raws,
            clipped=clippeds,
            success=torch.stack(succ),
            predicted=torch.stack(pred),
            l2=torch.stack(l2s),
            linf=torch.stack(linfs),
            changed_share=torch.stack(shares),
            iterations=torch.stack(iterations),
            evaluations=torch.stack(evaluations),
            epsilon_found=torch.stack(found),
            success_quantised=torch.stack(succ_q) if quantise_check else None,
            predicted_quantised=torch.stack(pred_q) if quantise_check else None,
            extra={k: torch.stack(v) for k, v in (extra or {}).items()},
        )


def _check_mode(mode: str, search_steps: int) -> None:
    if mode not in ("fixed", "minimal"):
        raise ConfigError(f"epsilon_mode must be 'fixed' or 'minimal', got {mode!r}")
    if not isinstance(search_steps, int) or search_steps < 0:
        raise ConfigError(f"search_steps must be an int >= 0, got {search_steps!r}")


class FixedEpsilonAttack(Attack):
    """An attack bounded by a budget: subclasses implement :meth:`run` for per-sample budgets.

    ``epsilon_mode='fixed'`` runs once at each budget.  ``'minimal'`` runs at the budget,
    then bisects ``search_steps`` times between 0 and the budget for each sample that
    succeeded, keeping the adversarial of the smallest successful budget; the step size
    scales with the budget (foolbox 2's search, bounded by the given maximum).
    ``early_stop`` freezes samples as soon as they succeed (None: on in 'minimal' mode, as
    foolbox 2 ran, off in 'fixed' mode).
    """

    epsilon_mode: str
    search_steps: int
    early_stop: bool | None

    @abstractmethod
    def run(
        self, model: nn.Module, x0: Tensor, criterion: Criterion, *, epsilon: Tensor, stepsize: Tensor, early_stop: bool
    ) -> RunOutput:
        """Perturb ``x0`` within per-sample budgets ``epsilon`` (pixels) using steps ``stepsize``."""

    @abstractmethod
    def stepsize(self, epsilon: Tensor, epsilon_max: float) -> Tensor:
        """Per-sample step sizes (pixels) for budgets ``epsilon`` (pixels)."""

    def _early_stop(self) -> bool:
        return self.epsilon_mode == "minimal" if self.early_stop is None else bool(self.early_stop)

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        criterion: Criterion | Tensor | Any,
        *,
        epsilons: float | Sequence[float],
        quantise: bool = False,
    ) -> AttackResult:
        x, crit = self._prepare(inputs, criterion)
        eps_list, scalar = _epsilon_list(epsilons, allow_none=False)
        judge = classifier_judge(model, crit)
        raws, clips, its, evs, found = [], [], [], [], []  # found: the budget that succeeded
        with attack_mode(model):
            for eps in eps_list:
                eps_pix = self.to_pixels(float(eps))  # type: ignore[arg-type]
                if self.epsilon_mode == "fixed":
                    e = torch.full((len(x),), eps_pix, dtype=x.dtype, device=x.device)
                    out = self.run(model, x, crit, epsilon=e, stepsize=self.stepsize(e, eps_pix),
                                   early_stop=self._early_stop())
                    raw, it, ev = out.x, out.iterations, out.iterations.clone()
                    f = torch.full((len(x),), float(eps), dtype=x.dtype, device=x.device)  # type: ignore[arg-type]
                else:
                    raw, it, ev, hi = self._search(model, x, crit, eps_pix, judge)
                    f = self.from_pixels(hi.double()).to(x.dtype)
                raws.append(raw.detach())
                clips.append(self.clip(x, raw.detach(), eps_pix))
                its.append(it)
                evs.append(ev)
                found.append(f)
            return self._finish(
                x=x, judge=judge, targeted=crit.targeted, mode=self.epsilon_mode, epsilons=eps_list,
                scalar=scalar, raws=raws, clippeds=clips, iterations=its, evaluations=evs,
                eps_found=found, quantise_check=quantise,
            )

    def _search(
        self, model: nn.Module, x: Tensor, crit: Criterion, eps_max: float, judge: Judge
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n = len(x)
        early = self._early_stop()
        hi = torch.full((n,), eps_max, dtype=x.dtype, device=x.device)
        lo = torch.zeros_like(hi)
        out = self.run(model, x, crit, epsilon=hi, stepsize=self.stepsize(hi, eps_max), early_stop=early)
        best = out.x.detach().clone()
        its = out.iterations.clone()
        evs = out.iterations.clone()
        ok = judge(self.clip(x, best, hi))[0]
        idx_ok = ok.nonzero().flatten()
        for _ in range(self.search_steps):
            if not len(idx_ok):
                break
            mid = (lo[idx_ok] + hi[idx_ok]) / 2
            sub = crit.subset(idx_ok)
            o = self.run(model, x[idx_ok], sub, epsilon=mid, stepsize=self.stepsize(mid, eps_max), early_stop=early)
            s = classifier_judge(model, sub)(self.clip(x[idx_ok], o.x.detach(), mid))[0]
            evs[idx_ok] += o.iterations
            win, lose = idx_ok[s], idx_ok[~s]
            hi[win] = mid[s]
            best[win] = o.x.detach()[s]
            its[win] = o.iterations[s]
            lo[lose] = mid[~s]
        return best, its, evs, hi


class MinimizationAttack(Attack):
    """An attack that looks for the smallest perturbation; budgets only clip its result.

    ``epsilons=None`` (the default use) keeps the unbounded minimal adversarial.
    :meth:`run` returns the adversarials (the inputs themselves where it found none).
    """

    @abstractmethod
    def run(self, model: nn.Module, x0: Tensor, criterion: Criterion) -> RunOutput:
        """Find minimal adversarials of ``x0`` (the inputs themselves where none was found)."""

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        criterion: Criterion | Tensor | Any,
        *,
        epsilons: float | Sequence[float | None] | None = None,
        quantise: bool = False,
    ) -> AttackResult:
        x, crit = self._prepare(inputs, criterion)
        eps_list, scalar = _epsilon_list(epsilons, allow_none=True)
        judge = classifier_judge(model, crit)
        with attack_mode(model):
            out = self.run(model, x, crit)
            raw = out.x.detach()
            evs = out.evaluations if out.evaluations is not None else out.iterations
            clips = [self.clip(x, raw, None if e is None else self.to_pixels(e)) for e in eps_list]
            # the size of each clipped adversarial: what was found within that budget
            norms = [perturbation_stats(x, c)[0 if self.distance == "l2" else 1] for c in clips]
            k = len(eps_list)
            return self._finish(
                x=x, judge=judge, targeted=crit.targeted, mode="minimal", epsilons=eps_list, scalar=scalar,
                raws=[raw] * k, clippeds=clips, iterations=[out.iterations] * k, evaluations=[evs] * k,
                eps_found=[self.from_pixels(n) for n in norms], quantise_check=quantise,
                extra={key: [v] * k for key, v in out.extra.items()},
            )
