"""Lockstep L-BFGS-B (frad.attacks.batched_lbfgsb) against SciPy's own minimize, and the
batched deep-features attack against the one-image-at-a-time solver."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, minimize, rosen, rosen_der

from frad.attacks import DeepFeaturesAttack, Misclassification, TargetedMisclassification
from frad.attacks.batched_lbfgsb import AVAILABLE, BatchProblem, minimize_lbfgsb_batch
from tiny_models import TinyFace

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not AVAILABLE, reason="needs SciPy >= 1.15 (the C port of L-BFGS-B)"),
]


def _problems(n: int = 40, count: int = 5, seed: int = 0) -> list[BatchProblem]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        x0 = rng.uniform(-2, 2, n)
        lo, hi = x0 - rng.uniform(0.1, 1.5, n), x0 + rng.uniform(0.1, 1.5, n)
        if k % 2:  # some one-sided and free variables
            lo[:5] = -np.inf
            hi[5:10] = np.inf
            lo[10:12], hi[10:12] = -np.inf, np.inf
        out.append(BatchProblem(x0, lo, hi))
    return out


def _scipy(p: BatchProblem, maxiter: int, maxcor: int, stop_at: int | None = None) -> tuple[np.ndarray, int, int, float]:
    """SciPy's minimize on one problem; ``stop_at`` raises from the objective at that evaluation."""
    count = {"nit": 0, "nfev": 0, "x": None}

    class Stop(Exception):
        pass

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        count["nfev"] += 1
        if stop_at is not None and count["nfev"] == stop_at:
            count["x"] = z.copy()
            raise Stop
        return rosen(z), rosen_der(z)

    def cb(_: object) -> None:
        count["nit"] += 1

    try:
        r = minimize(fun, p.x0, jac=True, method="L-BFGS-B", bounds=Bounds(p.lower, p.upper), callback=cb,
                     options={"maxiter": maxiter, "maxcor": maxcor})
        return r.x, r.nit, r.nfev, float(r.fun)
    except Stop:
        return count["x"], count["nit"], count["nfev"], float("nan")


def _batched_rosen(calls: list[int]):  # noqa: ANN202
    def evaluate(idx: list[int], X: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        calls.append(len(idx))
        return np.array([rosen(x) for x in X]), np.stack([rosen_der(x) for x in X]), None

    return evaluate


@pytest.mark.parametrize("maxiter", [3, 200])
def test_lockstep_equals_scipy_minimize_exactly(maxiter):
    probs = _problems()
    calls: list[int] = []
    iters = {}
    res = minimize_lbfgsb_batch(probs, _batched_rosen(calls), maxcor=7, maxiter=maxiter,
                                callback=lambda i: iters.__setitem__(i, iters.get(i, 0) + 1))
    for i, (p, r) in enumerate(zip(probs, res)):
        x, nit, nfev, fun = _scipy(p, maxiter, 7)
        np.testing.assert_array_equal(r.x, x)  # the same iterates, bit for bit
        assert (r.nit, r.nfev, r.fun) == (nit, nfev, fun)
        assert iters.get(i, 0) == nit
        assert r.status == (1 if maxiter == 3 else 0)
    # one batched call per round: as many calls as the longest problem's evaluations, the first with all
    assert len(calls) == max(r.nfev for r in res) and calls[0] == len(probs)
    assert sum(calls) == sum(r.nfev for r in res)


def test_stop_ends_a_problem_where_the_objective_said_so():
    probs = _problems(count=3, seed=1)
    stop_at = {0: 1, 1: 4, 2: None}  # problem 0 stops at x0, problem 1 at its 4th evaluation
    seen = {i: 0 for i in stop_at}

    def evaluate(idx, X):  # noqa: ANN001, ANN202
        stop = []
        for i in idx:
            seen[i] += 1
            stop.append(stop_at[i] == seen[i])
        return np.array([rosen(x) for x in X]), np.stack([rosen_der(x) for x in X]), np.array(stop)

    res = minimize_lbfgsb_batch(probs, evaluate, maxiter=50)
    for i, (p, r) in enumerate(zip(probs, res)):
        x, nit, nfev, _ = _scipy(p, 50, 10, stop_at[i])
        np.testing.assert_array_equal(r.x, x)
        assert (r.nfev, r.stopped) == (nfev, stop_at[i] is not None)
    assert res[0].nit == 0 and res[1].nit >= 1


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="lower bounds is greater"):
        minimize_lbfgsb_batch([BatchProblem(np.zeros(3), np.ones(3), np.zeros(3))], _batched_rosen([]))


# ------------------------------------------------------------------ the deep-features attack
class RowWiseFace(TinyFace):
    """TinyFace evaluated one row at a time: a batched pass gives bit-identical numbers to batch 1."""

    def forward(self, x):  # noqa: ANN001, ANN201
        one = super().forward
        return torch.cat([one(x[i : i + 1]) for i in range(len(x))])


@pytest.fixture(scope="module")
def faces():
    g = torch.Generator().manual_seed(1)
    protos = torch.rand(6, 3, 12, 12, generator=g) * 255
    imgs = (protos[:, None] + torch.randn(6, 6, 3, 12, 12, generator=g) * 12).clamp(0, 255)
    return imgs


def _templates(m, imgs):  # noqa: ANN001, ANN202
    with torch.no_grad():
        emb = m(imgs.flatten(0, 1).to(next(m.parameters()).dtype)).view(6, 6, -1)
    return emb[:, 1:].mean(1).float(), imgs[:, 0], torch.arange(6)


@pytest.mark.parametrize("targeted", [True, False])
def test_batched_attack_equals_one_at_a_time_exactly_when_evaluations_agree(faces, targeted, monkeypatch):
    """With bit-identical evaluations the lockstep solver walks every image's path exactly:
    the same iterations, evaluations, losses and adversarials, also for runs that never succeed."""
    m = RowWiseFace(0)
    templates, x, y = _templates(m, faces)
    crit = TargetedMisclassification((y + 1) % 6) if targeted else Misclassification(y)
    if not targeted:  # lockstep groups of at most 4 images: 4 + 2 here
        import frad.attacks.deep_features as df

        monkeypatch.setattr(df, "LOCKSTEP_MAX", 4)
    for delta in (2.0, 10.0):  # 2: nobody succeeds (runs to the limit); 10: most succeed early
        one = DeepFeaturesAttack(batched=False, max_iterations=60)(m, x, crit, epsilons=delta, templates=templates)
        many = DeepFeaturesAttack(batched=True, max_iterations=60)(m, x, crit, epsilons=delta, templates=templates)
        assert torch.equal(one.iterations, many.iterations)
        assert torch.equal(one.evaluations, many.evaluations)
        assert torch.equal(one.success, many.success)
        assert torch.equal(one.raw[0], many.raw[0])
        assert torch.equal(one.extra["loss"][0], many.extra["loss"][0])
        assert torch.equal(one.predicted[0], many.predicted[0])
    assert one.success.any() if not targeted else True


def test_batched_attack_with_a_real_batched_pass_matches_on_successes(faces):
    """A real batched pass (float64, so batch-size rounding is ~1e-16): successful images get
    the same iterations and adversarials as one at a time."""
    m = copy.deepcopy(TinyFace(0)).double()
    templates, x, y = _templates(m, faces)
    crit = TargetedMisclassification((y + 1) % 6)
    one = DeepFeaturesAttack(batched=False)(m, x, crit, epsilons=10.0, templates=templates)
    many = DeepFeaturesAttack(batched=True)(m, x, crit, epsilons=10.0, templates=templates)
    ok = one.success[0]
    assert ok.sum() >= 4 and torch.equal(ok, many.success[0])
    assert torch.equal(one.iterations[0][ok], many.iterations[0][ok])
    torch.testing.assert_close(one.raw[0][ok], many.raw[0][ok], rtol=0, atol=1e-6)
