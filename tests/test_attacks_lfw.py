"""Attacks on dlib's network with real LFW faces: parity with foolbox 3.3.4 on dlib's classifier,
and the success rates the paper reports (targeted BIM at eps 0.03, deep features at delta 5),
measured on a small LFW classifier trained inside the test.

Run with ``python -m pytest --lfw-dir=/path/to/lfw tests/test_attacks_lfw.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from frad.attacks import BIM, CarliniWagnerL2, DeepFeaturesAttack, Misclassification, TargetedMisclassification

pytestmark = [pytest.mark.lfw, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
fb = pytest.importorskip("foolbox", reason="foolbox==3.3.4 is the reference (pip install foolbox==3.3.4)")

N_IDS, PER_ID, SOURCES_PER_ID = 8, 8, 2


@pytest.fixture(scope="module")
def lfw_setup(lfw_dir, dlib_model):
    """8 LFW identities x 8 faces: 2 sources each, 6 for the head and the templates."""
    from frad.data.alignment import align_images
    from frad.models.base import embed_images, to_pixels
    from frad.models.classifier import FaceClassifier

    root = lfw_dir / "images"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())[:N_IDS]
    paths, labels = [], []
    for c, name in enumerate(names):
        files = sorted((root / name).glob("*.jpg"))[:PER_ID]
        paths += files
        labels += [c] * len(files)
    labels_np = np.array(labels)
    aligned = align_images(paths, workers=1)
    assert aligned.ok.all()
    emb = embed_images(dlib_model, aligned.chips)
    is_src = np.zeros(len(paths), bool)
    for c in range(N_IDS):
        is_src[np.flatnonzero(labels_np == c)[:SOURCES_PER_ID]] = True
    gal = ~is_src
    templates = np.stack([emb[gal & (labels_np == c)].mean(0) for c in range(N_IDS)])

    clf = FaceClassifier(dlib_model, N_IDS, dropout=0.0)
    head = clf.head[1]
    torch.manual_seed(0)
    e = torch.as_tensor(emb[gal])
    t = torch.as_tensor(labels_np[gal])
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):  # a softmax head on frozen embeddings (the paper trains only the head)
        opt.zero_grad()
        nn.functional.cross_entropy(head(e), t).backward()
        opt.step()
    head.zero_grad(set_to_none=True)
    clf.eval()
    x = to_pixels(aligned.chips[is_src])
    y = torch.as_tensor(labels_np[is_src])
    with torch.no_grad():
        correct = clf(x).argmax(1) == y
    assert correct.float().mean() >= 0.75  # dlib's embeddings separate these identities
    return clf, x[correct], y[correct], templates


def test_bim_matches_foolbox_on_dlib(lfw_setup):
    clf, x, y, _ = lfw_setup
    x, y = x[:8], y[:8]
    t = (y + 3) % N_IDS
    eps, steps = 0.03, 5
    ours = BIM(steps=steps)(clf, x, TargetedMisclassification(t), epsilons=eps)
    fm = fb.PyTorchModel(clf, bounds=(0, 255))
    ref = fb.attacks.LinfBasicIterativeAttack(abs_stepsize=2 * eps * 255 / steps, steps=steps, random_start=False)
    raw, clipped, success = ref(fm, x, fb.criteria.TargetedMisclassification(t), epsilons=eps * 255)
    clf.zero_grad(set_to_none=True)  # foolbox's backward() leaves gradients on the head
    assert torch.allclose(ours.raw[0], raw, atol=1e-4, rtol=0)
    assert torch.equal(ours.success[0], success)


class _Unit(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x * 255)


def test_cw_within_ten_percent_of_foolbox_on_dlib(lfw_setup):
    clf, x, y, _ = lfw_setup
    x, y = x[:8], y[:8]
    assert len(x) == 8
    # modest steps so the test stays fast, identical in both libraries
    kw = dict(binary_search_steps=3, steps=20, stepsize=1e-2, confidence=0.0, initial_const=1.0, abort_early=True)
    clf.zero_grad(set_to_none=True)
    ours = CarliniWagnerL2(**kw, abort_scope="batch")(clf, x, Misclassification(y))
    assert all(p.grad is None for p in clf.parameters())  # ours takes input gradients only
    fm = fb.PyTorchModel(_Unit(clf).eval(), bounds=(0, 1))
    raw, _, success = fb.attacks.L2CarliniWagnerAttack(**kw)(fm, x / 255, y, epsilons=None)
    clf.zero_grad(set_to_none=True)  # foolbox's backward() leaves gradients on the head
    found = success & (raw.flatten(1).abs().sum(1) > 0)
    ref_rate = found.float().mean().item()
    ref_l2 = (raw * 255 - x).flatten(1).norm(dim=1)[found].mean().item()
    rate = ours.success.float().mean().item()
    l2 = ours.l2[ours.success].mean().item()
    assert ref_rate >= 0.5
    assert abs(rate - ref_rate) <= 0.1 * ref_rate
    assert abs(l2 - ref_l2) <= 0.1 * ref_l2


def test_targeted_bim_and_deep_features_succeed_on_nine_in_ten(lfw_setup):
    """The issue's bar, on a small LFW classifier: targeted BIM at eps 0.03 and the
    deep-features attack at delta 5 (targeted and untargeted) fool >= 90% of the sources."""
    clf, x, y, templates = lfw_setup
    t = (y + 1 + torch.arange(len(y)) % (N_IDS - 1)) % N_IDS
    bim = BIM(steps=30)(clf, x, TargetedMisclassification(t), epsilons=0.03, quantise=True)
    assert bim.success.float().mean() >= 0.9
    assert (bim.linf <= 0.03 * 255 + 1e-3).all()
    face = clf.backbone
    df = DeepFeaturesAttack()
    tgt = df(face, x, TargetedMisclassification(t), epsilons=5.0, templates=templates, quantise=True)
    unt = df(face, x, Misclassification(y), epsilons=5.0, templates=templates, quantise=True)
    for res in (tgt, unt):
        assert res.success.float().mean() >= 0.9
        assert (res.linf <= 5.0 + 1e-4).all()
        assert (res.iterations[res.success] < 700).all()
