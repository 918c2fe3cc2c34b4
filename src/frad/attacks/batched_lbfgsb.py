"""Many independent L-BFGS-B problems solved in lockstep, sharing one batched evaluation per step.

SciPy's L-BFGS-B core (``setulb``) is a reverse-communication routine: it returns whenever it
needs the objective and gradient at a new point.  :func:`minimize_lbfgsb_batch` drives one
``setulb`` state per problem exactly as :func:`scipy.optimize.minimize` (method
``L-BFGS-B``) does, but instead of calling the objective once per problem it advances every
problem to its next request and answers all of them with one call of ``evaluate`` on the
stacked points.  For a neural network that call is one batched forward and backward pass,
far cheaper per point than batch 1; and the per-variable Python loops SciPy's wrapper runs
on every call (bounds conversion, 67,500 variables for a 150x150 face) are done once, in NumPy.

Each problem's iterates, iteration and evaluation counts are those of ``minimize`` on the
same objective (tested against SciPy); only the grouping of the evaluations changes.  Needs
SciPy >= 1.15 (the C port of L-BFGS-B and its ``setulb`` signature); :data:`AVAILABLE` says
whether this SciPy has it, and callers fall back to ``minimize`` one problem at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AVAILABLE", "BatchProblem", "BatchResult", "minimize_lbfgsb_batch"]

try:  # the C implementation (SciPy >= 1.15); older SciPy has a Fortran one with another signature
    from scipy.optimize import _lbfgsb

    AVAILABLE = "ln_task" in (_lbfgsb.setulb.__doc__ or "")
except ImportError:  # pragma: no cover
    _lbfgsb = None
    AVAILABLE = False

_NEW_X, _FG, _OTHER = 1, 3, None
_STOP, _STOP_MAXITER, _STOP_MAXFUN, _CONVERGED = 5, 504, 502, 4


@dataclass
class BatchProblem:
    """One box-constrained problem: start ``x0`` (float64, flat), bounds ``lower``/``upper``."""

    x0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class BatchResult:
    """What :func:`minimize_lbfgsb_batch` returns per problem (the fields of SciPy's result)."""

    x: np.ndarray
    fun: float
    nit: int
    nfev: int
    status: int  # 0 converged, 1 iteration/evaluation limit, 2 other stop, 3 stopped by ``evaluate``
    stopped: bool = False  # ``evaluate`` asked this problem to stop (e.g. the attack succeeded)
    extra: dict = field(default_factory=dict)


class _State:
    """One problem's ``setulb`` workspace and the bookkeeping SciPy's wrapper keeps."""

    def __init__(self, p: BatchProblem, maxcor: int) -> None:
        lo = np.asarray(p.lower, np.float64).ravel()
        hi = np.asarray(p.upper, np.float64).ravel()
        x0 = np.asarray(p.x0, np.float64).ravel()
        n = x0.size
        if lo.shape != (n,) or hi.shape != (n,):
            raise ValueError(f"bounds of shape {lo.shape} / {hi.shape} for {n} variables")
        if (lo > hi).any():
            raise ValueError("L-BFGS-B: one of the lower bounds is greater than an upper bound")
        fin_l, fin_u = np.isfinite(lo), np.isfinite(hi)
        self.nbd = np.zeros(n, np.int32)
        self.nbd[fin_l & ~fin_u] = 1
        self.nbd[fin_l & fin_u] = 2
        self.nbd[~fin_l & fin_u] = 3
        self.low = np.where(fin_l, lo, 0.0)
        self.up = np.where(fin_u, hi, 0.0)
        m = maxcor
        self.x = np.clip(x0, lo, hi)
        self.f: float | np.ndarray = np.array(0.0, dtype=np.float64)
        self.g = np.zeros(n, np.float64)
        self.wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
        self.iwa = np.zeros(3 * n, np.int32)
        self.task = np.zeros(2, np.int32)
        self.ln_task = np.zeros(2, np.int32)
        self.lsave = np.zeros(4, np.int32)
        self.isave = np.zeros(44, np.int32)
        self.dsave = np.zeros(29, np.float64)
        self.nit = 0
        self.nfev = 0
        self.last_x: np.ndarray | None = None  # the point f and g belong to (SciPy's memo)
        self.last_fg: tuple[float, np.ndarray] | None = None
        self.done = False
        self.stopped = False
        self.extra: dict = {}


def minimize_lbfgsb_batch(
    problems: Sequence[BatchProblem],
    evaluate: Callable[[list[int], np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    maxcor: int = 10,
    ftol: float = 2.2204460492503131e-09,
    gtol: float = 1e-5,
    maxiter: int = 15000,
    maxfun: int = 15000,
    maxls: int = 20,
    callback: Callable[[int], None] | None = None,
) -> list[BatchResult]:
    """Solve every problem as ``minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=...)`` would.

    ``evaluate(indices, X)`` gets the problem indices and their points stacked (k x n,
    float64) and returns ``(f, G, stop)``: k objective values, k x n gradients and optionally
    k booleans; a true ``stop`` ends that problem at that point (its result's ``x``), as an
    exception raised from a SciPy objective would.  ``callback(i)`` runs at each new
    iteration of problem ``i`` (SciPy's ``callback``).  Options as SciPy's.
    """
    if not AVAILABLE:
        raise RuntimeError("minimize_lbfgsb_batch needs SciPy >= 1.15 (its C L-BFGS-B); use scipy.optimize.minimize")
    if not problems:
        return []
    factr = ftol / np.finfo(float).eps
    states = [_State(p, maxcor) for p in problems]
    # SciPy evaluates the objective at x0 when it builds its ScalarFunction, before the loop
    want = list(range(len(states)))
    points = {i: states[i].x.copy() for i in want}
    while True:
        if want:
            _answer(states, want, points, evaluate)
        want, points = [], {}
        for i, s in enumerate(states):
            if s.done:
                continue
            x_needed = _advance(s, i, m=maxcor, factr=factr, pgtol=gtol, maxls=maxls, maxiter=maxiter,
                                maxfun=maxfun, callback=callback)
            if x_needed is not None:
                want.append(i)
                points[i] = x_needed
        if not want:
            break
    out = []
    for s in states:
        if s.stopped:
            status = 3
        elif s.task[0] == _CONVERGED:
            status = 0
        elif s.nfev > maxfun or s.nit >= maxiter:
            status = 1
        else:
            status = 2
        f = float(s.last_fg[0]) if s.last_fg is not None else float("nan")
        out.append(BatchResult(x=s.x.copy(), fun=f, nit=s.nit, nfev=s.nfev, status=status, stopped=s.stopped,
                               extra=s.extra))
    return out


def _answer(
    states: list[_State], want: list[int], points: dict[int, np.ndarray],
    evaluate: Callable[[list[int], np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]],
) -> None:
    X = np.stack([points[i] for i in want])
    f, G, stop = evaluate(list(want), X)
    for k, i in enumerate(want):
        s = states[i]
        s.nfev += 1
        if stop is not None and bool(stop[k]):
            s.x = points[i].copy()
            s.last_fg = (float(f[k]), np.asarray(G[k], np.float64))
            s.done = s.stopped = True
            continue
        s.last_x = points[i]
        s.last_fg = (float(f[k]), np.asarray(G[k], np.float64).copy())


def _advance(
    s: _State, i: int, *, m: int, factr: float, pgtol: float, maxls: int, maxiter: int, maxfun: int,
    callback: Callable[[int], None] | None,
) -> np.ndarray | None:
    """Run ``setulb`` until it needs f and g at a point not yet evaluated (returned) or stops."""
    while True:
        if s.last_fg is not None and s.task[0] == _FG:
            s.f, s.g = s.last_fg[0], s.last_fg[1]
        s.g = s.g.astype(np.float64)
        _lbfgsb.setulb(m, s.x, s.low, s.up, s.nbd, s.f, s.g, factr, pgtol, s.wa, s.iwa, s.task, s.lsave,
                       s.isave, s.dsave, maxls, s.ln_task)
        if s.task[0] == _FG:
            if s.last_x is not None and np.array_equal(s.x, s.last_x):
                continue  # SciPy's memo: the same point again costs no evaluation
            return s.x.copy()
        if s.task[0] == _NEW_X:
            s.nit += 1
            if callback is not None:
                callback(i)
            if s.nit >= maxiter:
                s.task[0], s.task[1] = _STOP, _STOP_MAXITER
            elif s.nfev > maxfun:
                s.task[0], s.task[1] = _STOP, _STOP_MAXFUN
            continue
        s.done = True
        return None
