"""The kNN-guided deep-features attack on a tiny face model: guidance, stopping, the per-pixel
box, the Figure 9 statistics, guide images and taps, worker processes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from frad.attacks import DeepFeaturesAttack, Misclassification, TargetedMisclassification, knn_predict
from frad.errors import ConfigError
from tiny_models import TinyFace


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    """Six identities: templates = centroids of 5 images each; sources the kNN gets right."""
    m = TinyFace(0)
    g = torch.Generator().manual_seed(1)
    protos = torch.rand(6, 3, 12, 12, generator=g) * 255
    imgs = (protos[:, None] + torch.randn(6, 6, 3, 12, 12, generator=g) * 12).clamp(0, 255)
    with torch.no_grad():
        emb = m(imgs.flatten(0, 1)).view(6, 6, -1)
    templates = emb[:, 1:].mean(1)
    x = imgs[:, 0]
    y = torch.arange(6)
    with torch.no_grad():
        assert torch.equal(knn_predict(m(x), templates, y, "euclidean"), y)
    return m, x, y, templates


# ------------------------------------------------------------------ k-NN guidance
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_predict_matches_scikit_learn(k, metric):
    rng = np.random.default_rng(k)
    templates = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    queries = rng.normal(size=(200, 5)).astype(np.float32)
    ours = knn_predict(torch.from_numpy(queries), torch.from_numpy(templates), torch.from_numpy(labels), metric, k).numpy()
    ref_model = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(templates, labels)
    ref = ref_model.predict(queries)
    # scikit-learn breaks vote ties by the smallest label, we by the nearest template: compare untied rows
    near = ref_model.kneighbors(queries, return_distance=False)
    counts = np.stack([np.bincount(labels[r], minlength=4) for r in near])
    untied = (counts == counts.max(1, keepdims=True)).sum(1) == 1
    assert untied.sum() >= 40
    np.testing.assert_array_equal(ours[untied], ref[untied])
    if k > 1:  # ties go to the class of the nearest template among the tied classes
        for i in np.flatnonzero(~untied)[:20]:
            tied = set(np.flatnonzero(counts[i] == counts[i].max()))
            first = next(labels[j] for j in near[i] if labels[j] in tied)
            assert ours[i] == first


# ------------------------------------------------------------------ the attack
@pytest.mark.parametrize("targeted", [True, False])
def test_attack_stops_as_soon_as_the_knn_is_fooled(setup, targeted):
    m, x, y, templates = setup
    t = (y + 2) % 6
    crit = TargetedMisclassification(t) if targeted else Misclassification(y)
    delta = 12.0
    res = DeepFeaturesAttack(max_iterations=300)(m, x, crit, epsilons=delta, templates=templates, quantise=True)
    adv = res.clipped[0]
    with torch.no_grad():
        pred = knn_predict(m(adv), templates, torch.arange(6), "euclidean")
    assert res.success.float().mean() >= 5 / 6
    assert torch.equal(res.predicted[0], pred)
    assert torch.equal(res.success[0], (pred == t) if targeted else (pred != y))
    # stopped at the first fooling point: well before the iteration limit
    assert (res.iterations[0][res.success[0]] < 300).all()
    assert (res.evaluations[0] >= res.iterations[0]).all()
    # the per-pixel box and the pixel range
    assert float((adv - x).abs().max()) <= delta + 1e-4
    assert float(adv.min()) >= 0 and float(adv.max()) <= 255
    # guides: the target's template, or the nearest template of another identity
    guide = res.extra["guide_label"][0]
    if targeted:
        assert torch.equal(guide, t)
    else:
        d = torch.cdist(m(x), templates)
        d[torch.arange(6), y] = float("inf")
        assert torch.equal(guide, d.argmin(1))
    # Figure 9 statistics by hand
    change = (adv - x).abs().amax(dim=1)
    assert torch.allclose(res.changed_share[0], (change > 5).float().mean(dim=(1, 2)))
    assert torch.allclose(res.linf[0], change.flatten(1).amax(1))
    assert res.epsilon_units == "pixels"


def test_run_without_early_success_uses_all_iterations(setup):
    """With a target the box cannot reach, the run goes on until the iteration limit."""
    m, x, y, templates = setup
    far = (y + 3) % 6
    res = DeepFeaturesAttack(max_iterations=7)(m, x[:2], TargetedMisclassification(far[:2]), epsilons=0.5,
                                             templates=templates)
    assert not res.success.any()
    assert (res.iterations <= 7).all() and (res.iterations >= 1).all()
    with torch.no_grad():
        start = ((m(x[:2]) - templates[far[:2]]) ** 2).sum(1)
    assert (res.extra["loss"][0] < start).all()  # the loss went down


def test_guide_images_and_taps(setup):
    m, x, y, templates = setup
    t = (y + 1) % 6
    guides = x[t]  # a guide image of the target identity
    res = DeepFeaturesAttack(feature="block2", max_iterations=20)(
        m, x, TargetedMisclassification(t), epsilons=15.0, templates=templates, guide_images=guides)
    # the loss is the distance between pooled block2 maps, and the run lowered it
    with torch.no_grad():
        _, adv_taps = m.forward_intermediates(res.clipped[0], ["block2"], pool=True)
        _, src_taps = m.forward_intermediates(x, ["block2"], pool=True)
        _, guide_taps = m.forward_intermediates(guides, ["block2"], pool=True)
    final = ((adv_taps["block2"] - guide_taps["block2"]) ** 2).sum(1)
    start = ((src_taps["block2"] - guide_taps["block2"]) ** 2).sum(1)
    moved = res.iterations[0] > 0
    assert moved.all()
    assert torch.allclose(res.extra["loss"][0], final, rtol=1e-3, atol=1e-5)
    assert (final < 0.5 * start).all()
    assert torch.equal(res.extra["guide_label"][0], knn_predict(m(guides), templates, torch.arange(6), "euclidean"))
    with pytest.raises(ConfigError, match="guide_images"):
        DeepFeaturesAttack(feature="block2")(m, x, y, epsilons=5.0, templates=templates)
    with pytest.raises(ConfigError, match="not a tap"):
        DeepFeaturesAttack(feature="conv9")(m, x, y, epsilons=5.0, templates=templates, guide_images=guides)
    with pytest.raises(ValueError, match="template class ids"):
        DeepFeaturesAttack()(m, x, y + 10, epsilons=5.0, templates=templates)


def test_cosine_metric_follows_the_model(setup):
    m, x, y, templates = setup
    mc = TinyFace(0, metric="cosine")
    t = (y + 4) % 6
    res = DeepFeaturesAttack(max_iterations=200)(mc, x, TargetedMisclassification(t), epsilons=15.0,
                                                  templates=templates)
    with torch.no_grad():
        pred = knn_predict(mc(res.clipped[0]), templates, torch.arange(6), "cosine")
    assert torch.equal(res.predicted[0], pred)
    assert res.success.float().mean() >= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("batched", [False, True])
def test_worker_processes_give_the_same_result(setup, batched):
    m, x, y, templates = setup
    if batched:  # workers batch their own share: float64 keeps batch-size rounding out of the comparison
        m = copy.deepcopy(m).double()
    t = (y + 2) % 6
    one = DeepFeaturesAttack(max_iterations=50, workers=1, batched=batched)(
        m, x, TargetedMisclassification(t), epsilons=8.0, templates=templates)
    with DeepFeaturesAttack(max_iterations=50, workers=2, threads_per_worker=1, batched=batched) as attack:
        two = attack(m, x, TargetedMisclassification(t), epsilons=8.0, templates=templates)
        again = attack(m, x[:3], TargetedMisclassification(t[:3]), epsilons=8.0, templates=templates)
        assert attack._pool is not None  # kept across calls inside the context
    assert attack._pool is None
    assert torch.equal(one.success, two.success)
    assert torch.allclose(one.clipped[0], two.clipped[0], atol=1e-4)
    assert torch.allclose(again.clipped[0], two.clipped[0][:3], atol=1e-4)
