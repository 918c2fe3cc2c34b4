"""FGSM, BIM and MI-FGSM: parity with foolbox 3.3.4, hand-computed MI-FGSM steps, epsilon modes,
the attack contract (no gradients left behind, modes restored, budgets and pixel range kept)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from frad.attacks import (
    BIM,
    FGSM,
    L2MIFGSM,
    MIFGSM,
    CarliniWagnerL2,
    Misclassification,
    TargetedMisclassification,
    create_attack,
)
from frad.errors import ConfigError
from tiny_models import TinyConv

fb = pytest.importorskip("foolbox", reason="foolbox==3.3.4 is the reference (pip install foolbox==3.3.4)")


pytestmark = pytest.mark.usefixtures("one_thread")


class Linear(nn.Module):
    """logits = W (x / 255) + b: input gradients in closed form."""

    def __init__(self, d: int, k: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(d, k)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(k, d, generator=g) * 0.3)
            self.fc.bias.copy_(torch.randn(k, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) / 255)


def _pixels(n: int, seed: int, hw: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, hw, hw, generator=g) * 255
    x[x < 20] = 0.0  # pixels on the range's edges exercise the clipping
    x[x > 235] = 255.0
    return x


@pytest.fixture(scope="module")
def tiny():
    m = TinyConv(0).eval()
    x = _pixels(16, 1)
    with torch.no_grad():
        y = m(x).argmax(1)
    return m, x, y


# ------------------------------------------------------------------ foolbox parity
@pytest.mark.parametrize("steps", [1, 10, 30])
@pytest.mark.parametrize("targeted", [False, True])
def test_bim_matches_foolbox(tiny, steps, targeted):
    m, x, y = tiny
    fm = fb.PyTorchModel(m, bounds=(0, 255))
    t = (y + 1 + torch.arange(len(y)) % 4) % 5
    crit = TargetedMisclassification(t) if targeted else y
    fcrit = fb.criteria.TargetedMisclassification(t) if targeted else y
    for eps in (0.03, 0.1):
        ours = BIM(steps=steps, early_stop=False)(m, x, crit, epsilons=eps)
        # foolbox takes the budget in its bounds' units and the same absolute step
        ref = fb.attacks.LinfBasicIterativeAttack(abs_stepsize=2 * eps * 255 / steps, steps=steps, random_start=False)
        raw, clipped, success = ref(fm, x, fcrit, epsilons=eps * 255)
        assert torch.allclose(ours.raw[0], raw, atol=1e-4, rtol=0)
        assert torch.allclose(ours.clipped[0], clipped, atol=1e-4, rtol=0)
        assert torch.equal(ours.success[0], success)
        assert (ours.iterations == steps).all()
    # the comparison is not vacuous: the attack changed predictions
    assert 0 < ours.success.float().mean() <= 1


def test_fgsm_matches_foolbox(tiny):
    m, x, y = tiny
    fm = fb.PyTorchModel(m, bounds=(0, 255))
    ours = FGSM()(m, x, y, epsilons=[0.01, 0.05])
    raws, clips, success = fb.attacks.FGSM()(fm, x, y, epsilons=[0.01 * 255, 0.05 * 255])
    for k in range(2):
        assert torch.allclose(ours.raw[k], raws[k], atol=1e-4, rtol=0)
        assert torch.allclose(ours.clipped[k], clips[k], atol=1e-4, rtol=0)
    assert torch.equal(ours.success, success)
    # one step of eps x sign(gradient): every pixel not at a range edge moved by exactly eps
    d = (ours.clipped[1] - x).abs()
    inner = (x > 0.05 * 255) & (x < 255 - 0.05 * 255)
    assert torch.allclose(d[inner], torch.full_like(d[inner], 0.05 * 255), atol=1e-3)


def test_unpacks_like_foolbox(tiny):
    m, x, y = tiny
    raw, clipped, success = BIM(steps=3)(m, x, y, epsilons=0.03)
    assert raw.shape == x.shape and clipped.shape == x.shape and success.shape == (len(x),)
    raws, clips, successes = BIM(steps=3)(m, x, y, epsilons=[0.01, 0.03])
    assert len(raws) == 2 and successes.shape == (2, len(x))


# ------------------------------------------------------------------ MI-FGSM by hand
def _ce_grad(W: np.ndarray, b: np.ndarray, x: np.ndarray, cls: np.ndarray) -> np.ndarray:
    z = (x.reshape(len(x), -1) / 255) @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), cls] -= 1
    return (p @ W / 255).reshape(x.shape)


@pytest.mark.parametrize("targeted", [False, True])
def test_mifgsm_linf_matches_hand_computed_steps(targeted):
    m = Linear(3 * 4 * 4, 4, seed=3).eval()
    x = _pixels(6, 2, hw=4)
    with torch.no_grad():
        y = m(x).argmax(1)
    cls = (y + 1) % 4 if targeted else y
    eps, steps, mu = 0.1, 3, 0.7
    alpha = 2 * eps * 255 / steps
    W, b = m.fc.weight.detach().double().numpy(), m.fc.bias.detach().double().numpy()
    x0 = x.double().numpy()
    xk, g = x0.copy(), np.zeros_like(x0)
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        grad = _ce_grad(W, b, xk, cls.numpy())
        g = mu * g + grad / np.abs(grad).reshape(len(x), -1).sum(1)[:, None, None, None]
        xk = xk + sign * alpha * np.sign(g)
        xk = np.clip(np.clip(xk, x0 - eps * 255, x0 + eps * 255), 0, 255)
    crit = TargetedMisclassification(cls) if targeted else y
    ours = MIFGSM(steps=steps, decay=mu)(m, x, crit, epsilons=eps)
    np.testing.assert_allclose(ours.raw[0].double().numpy(), xk, atol=1e-3)
    assert np.abs(xk - x0).max() > 0.5 * eps * 255  # the reference did move


@pytest.mark.parametrize("targeted", [False, True])
def test_mifgsm_l2_matches_equations_4_and_5(targeted):
    m = Linear(3 * 4 * 4, 4, seed=4).eval()
    x = _pixels(6, 5, hw=4)
    with torch.no_grad():
        y = m(x).argmax(1)
    cls = (y + 2) % 4 if targeted else y
    eps, steps, mu = 400.0, 4, 1.0  # absolute L2 budget in pixels; alpha = eps / T (eq. 5)
    W, b = m.fc.weight.detach().double().numpy(), m.fc.bias.detach().double().numpy()
    x0 = x.double().numpy()
    xk, g = x0.copy(), np.zeros_like(x0)
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        grad = _ce_grad(W, b, xk, cls.numpy())
        g = mu * g + grad / np.abs(grad).reshape(len(x), -1).sum(1)[:, None, None, None]
        xk = xk + sign * (eps / steps) * g / np.linalg.norm(g.reshape(len(x), -1), axis=1)[:, None, None, None]
        d = xk - x0
        n = np.linalg.norm(d.reshape(len(x), -1), axis=1)[:, None, None, None]
        xk = np.clip(x0 + d * np.minimum(1, eps / n), 0, 255)
    crit = TargetedMisclassification(cls) if targeted else y
    ours = L2MIFGSM(steps=steps, decay=mu)(m, x, crit, epsilons=eps)
    np.testing.assert_allclose(ours.raw[0].double().numpy(), xk, atol=1e-3)
    assert (ours.l2 <= eps + 1e-3).all()
    assert ours.epsilon_units == "pixels" and ours.distance == "l2"


# ------------------------------------------------------------------ epsilon modes
def _reference_bisection(m, x, y, eps_max, steps, search_steps):
    """Plain per-sample bisection with fixed-budget BIM runs at step 2 eps / steps."""
    found = []
    for i in range(len(x)):
        def ok(e):
            r = BIM(steps=steps, early_stop=True)(m, x[i:i + 1], y[i:i + 1], epsilons=e)
            return bool(r.success[0, 0])
        if not ok(eps_max):
            found.append(float("nan"))
            continue
        lo, hi = 0.0, eps_max
        for _ in range(search_steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        found.append(hi)
    return np.array(found)


def test_minimal_mode_finds_the_bisection_budget():
    m = Linear(3 * 4 * 4, 4, seed=7).eval()
    x = _pixels(8, 8, hw=4)
    with torch.no_grad():
        y = m(x).argmax(1)
    res = BIM(steps=8, epsilon_mode="minimal", search_steps=6)(m, x, y, epsilons=0.05)
    ref = _reference_bisection(m, x, y, 0.05, 8, 6)
    got = res.epsilon_found[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, equal_nan=True)
    assert res.mode == "minimal"
    s = res.success[0]
    assert 0 < s.sum() < len(x)  # both outcomes occur, so the check is not vacuous
    # the kept adversarial lies within the budget found, which is below the maximum
    assert (res.linf[0][s] <= torch.as_tensor(got[s.numpy()]) * 255 + 1e-3).all()
    assert (res.epsilon_found[0][s] < 0.05).all()
    assert (res.evaluations[0] >= res.iterations[0]).all()


def test_early_stop_freezes_samples_that_already_succeed(tiny):
    m, x, y = tiny
    wrong = (y + 1) % 5  # every input is already "misclassified" w.r.t. these labels
    res = BIM(steps=10, early_stop=True)(m, x, wrong, epsilons=0.1)
    assert res.success.all()
    assert (res.iterations == 0).all()
    assert torch.equal(res.clipped[0], x)
    off = BIM(steps=10, early_stop=False)(m, x, wrong, epsilons=0.1)
    assert (off.iterations == 10).all() and not torch.equal(off.clipped[0], x)


def test_quantised_success_is_rechecked(tiny):
    m, x, y = tiny
    res = BIM(steps=10)(m, x, y, epsilons=0.01, quantise=True)
    with torch.no_grad():
        expect = m(torch.round(res.clipped[0]).clamp(0, 255)).argmax(1) != y
    assert torch.equal(res.success_quantised[0], expect)
    assert torch.equal(res.predicted_quantised[0], m(torch.round(res.clipped[0])).argmax(1))


# ------------------------------------------------------------------ the contract
class WithHead(nn.Module):
    """A frozen body with a trainable head and dropout, like a FaceClassifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyConv(1, classes=8).requires_grad_(False)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("make", [lambda: BIM(steps=3), lambda: MIFGSM(steps=3, epsilon_mode="minimal", search_steps=2),
                                  lambda: L2MIFGSM(steps=3), lambda: FGSM(),
                                  lambda: CarliniWagnerL2(steps=5, binary_search_steps=2)],
                         ids=["bim", "mifgsm-minimal", "mifgsm-l2", "fgsm", "cw"])
def test_no_gradients_left_and_modes_restored(make):
    m = WithHead().train()
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    assert any(flags.values()) and not all(flags.values())
    x = _pixels(4, 9)
    eps = 200.0 if isinstance(make(), (L2MIFGSM, CarliniWagnerL2)) else 0.05
    with pytest.warns(UserWarning, match="training mode"):
        make()(m, x, torch.tensor([0, 1, 2, 3]), epsilons=eps)
    assert m.training and m.head[0].training and m.body.training
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert all(p.grad is None for p in m.parameters())


def test_eval_model_gives_no_warning(tiny):
    m, x, y = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BIM(steps=2)(m, x, y, epsilons=0.01)
    assert not m.training


def test_keyword_only_parameters_and_repr():
    with pytest.raises(TypeError):
        BIM(10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        BIM(stpes=10)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="stpes"):
        create_attack("bim", stpes=10)
    with pytest.raises(ConfigError, match="epsilon_mode"):
        BIM(epsilon_mode="smallest")
    with pytest.raises(ConfigError, match="steps"):
        MIFGSM(steps=0)
    assert repr(MIFGSM(steps=30, decay=0.5)).startswith("MIFGSM(steps=30, decay=0.5, rel_stepsize=None")
    assert create_attack("mifgsm", steps=30).get_params()["steps"] == 30


def test_bad_inputs_raise(tiny):
    m, x, y = tiny
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        BIM()(m, x / 255 - 0.5, y, epsilons=0.03)
    with pytest.raises(ValueError, match="classes"):
        BIM()(m, x, y[:3], epsilons=0.03)
    with pytest.raises(ValueError, match="epsilons"):
        BIM()(m, x, y, epsilons=-0.1)
    with pytest.raises(TypeError):
        BIM()(m, x, y, epsilons=0.03, steps=4)  # type: ignore[call-arg]


# ------------------------------------------------------------------ property: budgets hold
_ATTACKS = {
    "fgsm": lambda: FGSM(),
    "bim": lambda: BIM(steps=4),
    "bim-minimal": lambda: BIM(steps=3, epsilon_mode="minimal", search_steps=3),
    "mifgsm": lambda: MIFGSM(steps=4, early_stop=True),
    "mifgsm-l2": lambda: L2MIFGSM(steps=4, rel_stepsize=0.6),  # steps big enough to hit the ball
    "cw": lambda: CarliniWagnerL2(steps=6, binary_search_steps=2, stepsize=0.05),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(_ATTACKS)),
    seed=st.integers(0, 10_000),
    eps=st.floats(0.0, 0.4),
    targeted=st.booleans(),
    hw=st.sampled_from([4, 8, 12]),
)
def test_adversarials_stay_in_their_box_and_the_pixel_range(name, seed, eps, targeted, hw):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * hw * hw, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    m.eval()
    x = _pixels(3, seed, hw=hw)
    cls = torch.randint(0, 3, (3,), generator=g)
    crit = TargetedMisclassification(cls) if targeted else Misclassification(cls)
    attack = _ATTACKS[name]()
    budget = eps * 255 if attack.epsilon_units == "fraction_of_255" else eps * 2000
    res = attack(m, x, crit, epsilons=budget / 255 if attack.epsilon_units == "fraction_of_255" else budget)
    for t in (res.raw[0], res.clipped[0]):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 255.0
    if attack.distance == "linf":
        assert float((res.clipped[0] - x).abs().max()) <= budget + 1e-3
        if name != "cw":
            assert float((res.raw[0] - x).abs().max()) <= budget + 1e-3
    else:
        assert float((res.clipped[0] - x).flatten(1).norm(dim=1).max()) <= budget + 1e-3
    assert torch.allclose(res.l2[0], (res.clipped[0] - x).flatten(1).norm(dim=1))


def test_in_place_linf_projection_equals_clip_linf_bit_for_bit():
    # the sign step's one-pass add and in-place projection must not change a single value
    from frad.attacks.base import _per_sample, clip_linf
    from frad.attacks.gradient import _project_linf_

    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 20, 20, generator=gen) * 255
    x = (x0 + (torch.rand(x0.shape, generator=gen) - 0.5) * 30).clamp(0, 255)
    g = torch.randn(x0.shape, generator=gen)
    g[g.abs() < 0.3] = 0
    for direction in (1.0, -1.0):
        old = clip_linf(x0, x + (direction * 1.7) * g.sign(), 4.3).clamp_(0, 255)
        new = _project_linf_(torch.add(x, g.sign(), alpha=direction * 1.7), x0, 4.3)
        assert torch.equal(old, new)
        e, st = torch.rand(8, generator=gen) * 10, torch.rand(8, generator=gen) * 3
        step = direction * _per_sample(st, 4) * g.sign()
        assert torch.equal(clip_linf(x0, x + step, e).clamp_(0, 255), _project_linf_(x + step, x0, e))
    assert (old != x).any() and (old - x0).abs().max() <= 4.3 + 1e-4
