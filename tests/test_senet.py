"""senet50_ft's architecture, preprocessing, taps and head, against a functional reference.

The reference below is written from shared/docs/reference-notes.md with plain torch.nn.functional
calls in float64, and pools the stem the way the MMdnn conversion does (pad the end with -inf,
no ceil_mode), so it checks frad's module structure, strides, SE branch and ceil-mode pool
rather than repeating them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frad.errors import ConfigError, WeightsError
from frad.models import create_model
from frad.models.classifier import FaceClassifier
from frad.models.base import Preprocessing
from frad.models.senet import SENet50, senet50_ft

MEAN_BGR = torch.tensor([91.4953, 103.8827, 131.0912], dtype=torch.float64).view(1, 3, 1, 1)
STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
NUM_CLASSES = 10


def randomise(model: SENet50, seed: int = 0) -> SENet50:
    """Random weights and BatchNorm statistics (PyTorch's init leaves BN an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")) and t.ndim == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 1:
                small = ".bn3." in name or ".downsample.1." in name
                t.copy_(torch.rand(t.shape, generator=g) * (0.2 if small else 1.0) + (0.1 if small else 0.5))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model


@pytest.fixture(scope="module")
def model() -> SENet50:
    return randomise(senet50_ft(pretrained=False, num_classes=NUM_CLASSES))


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 255


@pytest.fixture(scope="module")
def small() -> torch.Tensor:
    """For checks that do not depend on the input size (a 224x224 pass costs seconds here)."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255


def reference(sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """SE-ResNet-50 from the notes, in float64: (16 block outputs, pooled feature, logits)."""
    p = {k: v.double() for k, v in sd.items()}

    def bn(x: torch.Tensor, k: str) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        inv = (p[f"{k}.running_var"] + 1e-5).rsqrt()
        return (x - p[f"{k}.running_mean"].view(shape)) * (inv * p[f"{k}.weight"]).view(shape) + p[f"{k}.bias"].view(shape)

    x = pixels.double()[:, [2, 1, 0]] - MEAN_BGR  # RGB -> BGR, minus the B, G, R mean, no scaling
    x = F.relu(bn(F.conv2d(x, p["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)  # MMdnn's way
    taps = []
    for s, (_planes, blocks, stride) in enumerate(STAGES, start=1):
        for b in range(blocks):
            k = f"layer{s}.{b}"
            st = stride if b == 0 else 1
            y = F.relu(bn(F.conv2d(x, p[f"{k}.conv1.weight"], stride=st), f"{k}.bn1"))  # v1: stride on the 1x1
            y = F.relu(bn(F.conv2d(y, p[f"{k}.conv2.weight"], padding=1), f"{k}.bn2"))
            y = bn(F.conv2d(y, p[f"{k}.conv3.weight"]), f"{k}.bn3")
            z = y.mean(dim=(2, 3), keepdim=True)
            z = torch.sigmoid(F.conv2d(F.relu(F.conv2d(z, p[f"{k}.conv4.weight"], p[f"{k}.conv4.bias"])), p[f"{k}.conv5.weight"], p[f"{k}.conv5.bias"]))
            short = bn(F.conv2d(x, p[f"{k}.downsample.0.weight"], stride=st), f"{k}.downsample.1") if b == 0 else x
            x = F.relu(y * z + short)
            taps.append(x)
    pooled = x.mean(dim=(2, 3))
    return taps, pooled, pooled @ p["fc.weight"].T + p["fc.bias"]


@pytest.fixture(scope="module")
def outputs(model: SENet50, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.no_grad():
        return model.forward_intermediates(pixels, "all")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = b.abs().max().item()
    torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5 * scale)


def test_matches_the_reference_architecture(model: SENet50) -> None:
    # 96x96: the stem gives 48x48, where ceil_mode matters (24x24 vs 23x23), at a fifth of 224's cost
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4)) * 255
    with torch.no_grad():
        emb, taps = model.forward_intermediates(x, "all")
    ref_taps, ref_pool, ref_logits = reference(model.state_dict(), x)
    assert torch.isfinite(emb).all() and ref_pool.abs().max() > 1e-3
    names = model.resolve_taps("blocks")
    assert len(ref_taps) == len(names) == 16 and ref_taps[0].shape[-1] == 24
    for n, r in zip(names, ref_taps):
        assert taps[n].shape == r.shape, n
        _close(taps[n], r)
    _close(taps["pool"], ref_pool)
    _close(emb, ref_pool)
    _close(taps["logits"], ref_logits)


def test_tap_names_shapes_and_feature_info(model: SENet50, outputs) -> None:
    _emb, taps = outputs
    expected = [f"conv{s}_{b}" for s, n in zip(range(2, 6), (3, 4, 6, 3)) for b in range(1, n + 1)]
    assert model.resolve_taps("blocks") == expected
    assert model.tap_names == [*expected, "pool", "logits", "embedding"]
    sizes = {"2": (256, 56), "3": (512, 28), "4": (1024, 14), "5": (2048, 7)}  # 56: the ceil-mode max-pool
    for info in model.feature_info:
        t = taps[info.name]
        assert t.shape[1] == info.channels, info
        if t.ndim == 4:
            assert (t.shape[1], t.shape[2]) == sizes[info.name[4]]
            assert 224 // t.shape[2] == info.reduction
        else:
            assert info.reduction == 32
    assert taps["logits"].shape == (1, NUM_CLASSES)
    assert torch.equal(taps["embedding"], taps["pool"])


def test_feature_info_module_paths_produce_the_taps(model: SENet50, small: torch.Tensor) -> None:
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for info in model.feature_info:
        if info.name in ("embedding", "pool"):
            continue
        mod = model.get_submodule(info.module)
        handles.append(mod.register_forward_hook(lambda m, i, o, n=info.name: seen.__setitem__(n, o)))
    try:
        with torch.no_grad():
            _, taps = model.forward_intermediates(small, "all")
    finally:
        for h in handles:
            h.remove()
    for n, t in seen.items():
        assert torch.equal(t, taps[n]), n
    assert len(seen) == 17


def test_forward_and_pooled_taps(model: SENet50, small: torch.Tensor) -> None:
    with torch.no_grad():
        emb, taps = model.forward_intermediates(small, ["conv3_2", "logits"])
        assert torch.equal(model(small), emb)
        _, pooled = model.forward_intermediates(small, ["conv3_2", "logits"], pool=True)
    assert torch.allclose(pooled["conv3_2"], taps["conv3_2"].mean(dim=(2, 3)))
    assert list(pooled) == ["conv3_2", "logits"] and torch.equal(pooled["logits"], taps["logits"])


def test_preprocessing_is_bgr_minus_mean(model: SENet50) -> None:
    x = torch.rand(2, 3, 20, 30) * 255
    want = x.double()[:, [2, 1, 0]] - MEAN_BGR
    torch.testing.assert_close(model.preprocess(x).double(), want, rtol=0, atol=1e-4)
    spec = model.preprocess.spec
    assert (spec.channel_order, spec.scale, spec.resize, spec.crop) == ("BGR", 1.0, None, None)


def test_resize_crop_option() -> None:
    m = senet50_ft(pretrained=False, num_classes=0, resize_crop=True)
    assert m.preprocess.spec == Preprocessing(
        mean=(131.0912, 103.8827, 91.4953), scale=1.0, channel_order="BGR", resize=256, crop=224
    )
    x = torch.rand(1, 3, 256, 300) * 255  # short side already 256: only the centre crop acts
    want = x.double()[:, [2, 1, 0], 16:240, 38:262] - MEAN_BGR
    torch.testing.assert_close(m.preprocess(x).double(), want, rtol=0, atol=1e-4)
    assert m.preprocess(torch.rand(1, 3, 300, 400) * 255).shape == (1, 3, 224, 224)


def test_gradients_reach_the_pixels_and_model_is_frozen(model: SENet50) -> None:
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = (torch.rand(1, 3, 64, 64) * 255).requires_grad_()
    model(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_new_head_for_chosen_identities(model: SENet50, small: torch.Tensor) -> None:
    with torch.no_grad():
        emb = model(small)
    ids = [f"n{i:06d}" for i in range(5)]
    clf = FaceClassifier(model, len(ids), class_names=ids, dropout=0.5).eval()
    drop, lin = clf.head
    assert isinstance(drop, torch.nn.Dropout) and drop.p == 0.5
    assert (lin.in_features, lin.out_features) == (2048, 5) and lin.weight.requires_grad
    with torch.no_grad():
        logits, emb2, ctaps = clf.forward_intermediates(small, "blocks")
    assert torch.equal(emb2, emb) and list(ctaps) == model.resolve_taps("blocks")
    torch.testing.assert_close(logits, emb @ lin.weight.T + lin.bias)
    assert clf.class_names == ids


def test_works_on_another_device() -> None:
    """No CPU-only assumptions: the whole forward runs on the meta device (shapes only)."""
    m = senet50_ft(pretrained=False, num_classes=3).to("meta")
    emb, taps = m.forward_intermediates(torch.empty(2, 3, 224, 224, device="meta"), "all")
    assert emb.device.type == "meta" and emb.shape == (2, 2048)
    assert taps["conv5_3"].shape == (2, 2048, 7, 7) and taps["logits"].shape == (2, 3)


def test_builder_arguments() -> None:
    with pytest.raises(WeightsError) as err:
        create_model("senet50_ft")
    msg = str(err.value)
    for part in ("weights=PATH", "Python-2 pickle", "MMdnn .npy", "format='pickle'", "format='mmdnn'", "pretrained=False"):
        assert part in msg
    with pytest.raises(ConfigError, match="drop one"):
        create_model("senet50_ft", weights="x.pkl", pretrained=False)
    with pytest.raises(ConfigError, match="num_classes must be >= 0"):
        senet50_ft(pretrained=False, num_classes=-1)
    with pytest.raises(ConfigError, match="2 class_names for a 3-way"):
        senet50_ft(pretrained=False, num_classes=3, class_names=["a", "b"])
    m = create_model("senet50_ft", pretrained=False)
    assert m.num_classes == 8631 and m.info.extra["weights_format"] == "random" and m.info.metric == "cosine"
    assert m.info.embedding_dim == 2048 and m.info.input_size == (224, 224)
    headless = senet50_ft(pretrained=False, num_classes=0)
    assert "logits" not in headless.tap_names
    with pytest.raises(KeyError, match="unknown tap"):
        headless.forward_intermediates(torch.zeros(1, 3, 32, 32), ["logits"])


def test_fingerprint_follows_weights_and_preprocessing() -> None:
    a = senet50_ft(pretrained=False, num_classes=0)
    b = senet50_ft(pretrained=False, num_classes=0, resize_crop=True)
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() != b.fingerprint()
    c = senet50_ft(pretrained=False, num_classes=0)
    c.load_state_dict(a.state_dict())
    assert a.fingerprint() == c.fingerprint()
