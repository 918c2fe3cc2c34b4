"""CW-L2 against foolbox 3.3.4 and L-BFGS on small models.

Our CW measures the loss's distance in units of the pixel range (foolbox 2's convention, so
the paper's c means the same); foolbox 3 measures it in its bounds' units, so the reference
runs with bounds (0, 1) on the same model behind a x255 wrapper: then both minimise the same
function of the same tanh variable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from frad.attacks import LBFGS, CarliniWagnerL2, Misclassification, TargetedMisclassification
from frad.errors import ConfigError
from tiny_models import TinyConv, Unit

fb = pytest.importorskip("foolbox", reason="foolbox==3.3.4 is the reference (pip install foolbox==3.3.4)")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    m = TinyConv(0).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, 16, 16, generator=g) * 255
    with torch.no_grad():
        y = m(x).argmax(1)
    t = (y + 1 + torch.arange(len(y)) % 4) % 5
    return m, x, y, t


def _foolbox_cw(m, x, crit, **kw):
    fm = fb.PyTorchModel(Unit(m).eval(), bounds=(0, 1))
    raw, _, success = fb.attacks.L2CarliniWagnerAttack(**kw)(fm, x / 255, crit, epsilons=None)
    found = success & (raw.flatten(1).abs().sum(1) > 0)  # foolbox returns zeros where it failed
    return raw * 255, found


@pytest.mark.parametrize("targeted", [False, True])
def test_cw_without_abort_equals_foolbox(tiny, targeted):
    m, x, y, t = tiny
    kw = dict(binary_search_steps=3, steps=30, stepsize=2e-2, confidence=0.0, initial_const=1e-2, abort_early=False)
    crit = TargetedMisclassification(t) if targeted else Misclassification(y)
    ours = CarliniWagnerL2(**kw)(m, x, crit)
    raw, found = _foolbox_cw(m, x, fb.criteria.TargetedMisclassification(t) if targeted else y, **kw)
    assert torch.equal(ours.success[0], found)
    assert found.float().mean() >= 0.5
    assert torch.allclose(ours.raw[0][found], raw[found], atol=1e-3, rtol=0)
    assert (ours.iterations == 3 * 30).all()


@pytest.mark.parametrize("targeted", [False, True])
def test_cw_batch_abort_within_ten_percent_of_foolbox(tiny, targeted):
    m, x, y, t = tiny
    kw = dict(binary_search_steps=4, steps=50, stepsize=1e-2, confidence=0.0, initial_const=1e-2, abort_early=True)
    crit = TargetedMisclassification(t) if targeted else Misclassification(y)
    ours = CarliniWagnerL2(**kw, abort_scope="batch")(m, x, crit)
    raw, found = _foolbox_cw(m, x, fb.criteria.TargetedMisclassification(t) if targeted else y, **kw)
    ref_rate = found.float().mean().item()
    ref_l2 = (raw - x).flatten(1).norm(dim=1)[found].mean().item()
    rate = ours.success.float().mean().item()
    l2 = ours.l2[ours.success].mean().item()
    assert ref_rate > 0.5
    assert abs(rate - ref_rate) <= 0.1 * ref_rate
    assert abs(l2 - ref_l2) <= 0.1 * ref_l2


def test_cw_sample_abort_makes_each_result_independent_of_its_batch(tiny):
    """foolbox 2 attacked one image at a time; per-sample abort reproduces that in a batch."""
    m, x, y, _ = tiny
    attack = CarliniWagnerL2(binary_search_steps=2, steps=40, stepsize=2e-2)
    batch = attack(m, x, y)
    for i in (0, 5, 11):
        alone = attack(m, x[i:i + 1], y[i:i + 1])
        assert torch.equal(batch.success[0, i:i + 1], alone.success[0])
        assert torch.allclose(batch.raw[0][i], alone.raw[0][0], atol=1e-2)
        assert batch.iterations[0, i] == alone.iterations[0, 0]
    assert (batch.iterations < 2 * 40).any()  # some samples did abort early


def test_cw_confidence_margin(tiny):
    m, x, y, _ = tiny
    kappa = 2.0
    res = CarliniWagnerL2(binary_search_steps=3, steps=60, stepsize=5e-2, confidence=kappa, initial_const=1.0,
                          abort_early=False)(m, x, y)
    ok = res.success[0]
    assert ok.sum() >= 6
    with torch.no_grad():
        logits = m(res.raw[0][ok])
    true = logits[torch.arange(int(ok.sum())), y[ok]]
    other = logits.clone()
    other[torch.arange(int(ok.sum())), y[ok]] = -float("inf")
    assert (other.max(1).values - true >= kappa - 1e-3).all()


def test_cw_failures_return_the_input_and_budgets_clip(tiny):
    m, x, y, _ = tiny
    res = CarliniWagnerL2(binary_search_steps=1, steps=3, stepsize=1e-3)(m, x, y, epsilons=[None, 1.0])
    failed = ~res.success[0]
    assert failed.any()
    assert torch.equal(res.raw[0][failed], x[failed])
    assert torch.isnan(res.epsilon_found[0][failed]).all()
    assert (res.l2[1] <= 1.0 + 1e-4).all()  # the second budget (1 grey level of L2) clips
    with pytest.raises(ConfigError, match="abort_scope"):
        CarliniWagnerL2(abort_scope="images")


def test_cw_defaults_are_the_papers():
    p = CarliniWagnerL2().get_params()
    assert (p["binary_search_steps"], p["steps"], p["stepsize"], p["initial_const"], p["confidence"],
            p["abort_early"]) == (5, 1000, 5e-3, 1e-2, 0.0, True)


# ---------------------------------------------------------------- L-BFGS
class LinearPixels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(3 * 6 * 6, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.3)
            self.fc.bias.copy_(torch.randn(4, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) / 255)


def test_lbfgs_finds_small_box_constrained_adversarials():
    model = wrapped = LinearPixels().eval()
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        y = model(x).argmax(1)
    t = (y + 1) % 4
    res = LBFGS(max_iterations=50, initial_const=1e-3)(wrapped, x, TargetedMisclassification(t), quantise=True)
    assert res.success.all()
    assert float(res.raw[0].min()) >= 0 and float(res.raw[0].max()) <= 255
    with torch.no_grad():
        assert torch.equal(model(res.raw[0]).argmax(1), t)
    # close to the true minimal perturbation: for a linear model, a quadratic programme
    # (min ||d|| subject to the target winning and the pixel box), solved by SciPy's SLSQP
    W = model.fc.weight.detach().double().numpy() / 255
    b = model.fc.bias.detach().double().numpy()
    for i in range(len(x)):
        x0 = x[i].flatten().double().numpy()
        ti = int(t[i])
        others = [j for j in range(4) if j != ti]
        cons = [{"type": "ineq", "fun": lambda d, j=j: (W[ti] - W[j]) @ (x0 + d) + b[ti] - b[j],
                 "jac": lambda d, j=j: W[ti] - W[j]} for j in others]
        qp = minimize(lambda d: d @ d, np.zeros_like(x0), jac=lambda d: 2 * d, constraints=cons,
                      bounds=list(zip(-x0, 255 - x0)), method="SLSQP", options={"maxiter": 500})
        assert qp.success
        optimal = float(np.sqrt(qp.fun))
        assert optimal - 1e-3 <= float(res.l2[0, i]) <= 1.25 * optimal + 0.5
    c = res.extra["const"][0]
    assert (c >= 1e-5).all() and torch.isfinite(c).all()
    untargeted = LBFGS(max_iterations=50, bisection_steps=2, initial_const=1e-2)(wrapped, x, y)
    assert untargeted.success.all()
