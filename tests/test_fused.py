"""dlib's fused graph equals the plain one; keeping freed memory changes no result.

The fused graph (max-pool before the stem's ReLU, in-place ReLU and residual add, the stem's
input gradient as a stride-1 convolution) is frad's default, so ``test_dlib_parity.py`` checks
it against dlib itself; here it is checked against the plain graph it replaces: embeddings and
every tap bit for bit, input gradients to float tolerance, and through an attack.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny_models import TinyFace

from frad.attacks import BIM, Misclassification
from frad.models.base import MEMORY_FORMATS
from frad.models.classifier import FaceClassifier
from frad.utils import allocator

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    xx = x.clone().requires_grad_(True)
    emb, taps = model.forward_intermediates(xx, "all")
    # a loss on every tap, so the gradient runs back through each block's output
    loss = emb.pow(2).sum() + sum(t.pow(2).mean() for t in taps.values())
    (g,) = torch.autograd.grad(loss, xx)
    return emb.detach(), g, {k: t.detach() for k, t in taps.items()}


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS)
def test_dlib_fused_graph_equals_plain_graph(dlib_model, memory_format):
    assert dlib_model.fused  # the default, so the parity test against dlib runs the fused graph
    x = torch.rand(3, 3, 150, 150, generator=torch.Generator().manual_seed(3)) * 255
    # a corner of negative stem responses too, where max-pool and ReLU meet ties at zero
    x[0, :, :40, :40] = 0.0
    try:
        dlib_model.set_memory_format(memory_format)
        emb_f, g_f, taps_f = _run(dlib_model.set_fused(True), x)
        emb_p, g_p, taps_p = _run(dlib_model.set_fused(False), x)
        with torch.no_grad():  # the inference path (no autograd) too
            inference = dlib_model.set_fused(True)(x)
    finally:
        dlib_model.set_memory_format("channels_last").set_fused(True)
    assert torch.equal(emb_f, emb_p)
    # the stem's input gradient sums the same products in another order (space_to_depth.py)
    assert g_f.abs().max() > 0
    torch.testing.assert_close(g_f, g_p, rtol=1e-4, atol=1e-5 * float(g_p.abs().max()))
    assert taps_f.keys() == taps_p.keys() and len(taps_f) == 15
    for k in taps_f:
        assert torch.equal(taps_f[k], taps_p[k]), k
    assert torch.equal(inference, emb_f)


def test_bim_on_the_fused_graph_matches_bim_on_the_plain_one(dlib_model):
    torch.manual_seed(0)
    clf = FaceClassifier(dlib_model, 4, dropout=0.0).eval()
    with torch.no_grad():
        clf.head[1].weight.mul_(20)
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(5)) * 255
    y = clf(x).argmax(1)
    attack = BIM(steps=3, early_stop=False)
    try:
        dlib_model.set_fused(False)
        plain = attack(clf, x, Misclassification(y), epsilons=0.01)
    finally:
        dlib_model.set_fused(True)
    fused = attack(clf, x, Misclassification(y), epsilons=0.01)
    # sign steps can turn a rounding difference in a near-zero gradient into another pixel
    assert float((plain.clipped[0] != fused.clipped[0]).float().mean()) < 0.01
    assert torch.equal(plain.success, fused.success)
    assert (plain.clipped[0] != x).any()


def test_fused_setting_is_checked_and_survives_pickling():
    m = TinyFace(0)
    assert m.fused
    with pytest.raises(ValueError, match="fused must be True or False"):
        m.set_fused("no")  # type: ignore[arg-type]
    assert m.set_fused(False) is m and not m.fused
    assert not pickle.loads(pickle.dumps(m)).fused


_FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from frad.utils import allocator
    sys.path.insert(0, sys.argv[1])
    from tiny_models import TinyFace
    TinyFace(0)(torch.rand(1, 3, 12, 12) * 255)  # a face model's first CPU pass decides
    def faults():
        r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            t = torch.ones(12 * 2**20)  # 48 MB: above glibc's largest mmap threshold
            del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r
    faults()
    print(faults())
    """
)


def _page_faults(env_value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV_VAR}
    if env_value is not None:
        env[allocator.ENV_VAR] = env_value
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", _FAULTS, here], env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator._libc() is None, reason="glibc only")
def test_keeping_freed_memory_stops_the_page_faults_and_the_env_var_turns_it_off():
    # 5 x 48 MB first-touched afresh = ~60,000 faults with glibc as it comes; ~0 when kept
    kept, default = _page_faults(None), _page_faults("0")
    assert default > 20_000, default
    assert kept < default / 20, (kept, default)


def test_experiment_config_turns_the_fused_graph_off():
    from pathlib import Path

    from frad.errors import ConfigError
    from frad.pipeline.config import load_config, section_hash

    path = Path(__file__).parents[1] / "configs" / "demo.yaml"
    cfg = load_config(path, {"model.fused": False})
    assert cfg.model.fused is False and load_config(path).model.fused is None
    # speed only: the features stage's fingerprint does not change with it
    assert section_hash({"model": cfg.model}) == section_hash({"model": load_config(path).model})
    with pytest.raises(ConfigError, match="model.fused"):
        load_config(path, {"model.fused": "maybe"})
