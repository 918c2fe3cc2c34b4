"""tap_model: any nn.Module as a tapped face model; taps checked against outputs computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frad.errors import ConfigError
from frad.models.adapter import TappedModel, tap_model
from frad.models.base import Preprocessing

PRE = Preprocessing(mean=(120.0, 110.0, 100.0), scale=1 / 128, channel_order="BGR")


class Basic(nn.Module):
    """A torchvision-style basic block: one shared in-place ReLU and an in-place residual add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # overwrites bn2's output in place
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Basic(8, 8, 1), Basic(8, 8, 1))
        self.layer2 = nn.Sequential(Basic(8, 16, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    net = TinyResNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def by_hand(net: TinyResNet, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module output the tests tap, computed step by step with functional ops."""

    def bn(m: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    def block(b: Basic, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        identity = x if b.down is None else bn(b.down[1], F.conv2d(x, b.down[0].weight, stride=b.down[0].stride))
        y = F.relu(bn(b.bn1, F.conv2d(x, b.conv1.weight, stride=b.conv1.stride, padding=1)))
        y2 = bn(b.bn2, F.conv2d(y, b.conv2.weight, padding=1))
        return F.relu(y2 + identity), y2

    x = (pixels[:, [2, 1, 0]] - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)) / 128
    out = {"conv": F.conv2d(x, net.conv.weight, stride=2, padding=1)}
    x = F.relu(bn(net.bn, out["conv"]))
    out["layer1.0"], _ = block(net.layer1[0], x)
    out["layer1.1"], _ = block(net.layer1[1], out["layer1.0"])
    out["layer2.0"], out["layer2.0.bn2"] = block(net.layer2[0], out["layer1.1"])
    out["pool"] = out["layer2.0"].mean(dim=(2, 3), keepdim=True)
    out["fc"] = out["pool"].flatten(1) @ net.fc.weight.T + net.fc.bias
    return out


@pytest.fixture()
def pixels() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255


TAPS = ["layer2.0.bn2", "layer1.0", "conv", "layer2.0", "layer1.1"]  # deliberately out of order


def test_taps_equal_the_module_outputs_computed_by_hand(pixels: torch.Tensor) -> None:
    net = tiny()
    model = tap_model(net, TAPS, embedding="pool", preprocessing=PRE, input_size=(32, 32))
    with torch.no_grad():
        emb, taps = model.forward_intermediates(pixels, "all")
        ref = by_hand(net, pixels)
    assert list(taps) == ["conv", "layer1.0", "layer1.1", "layer2.0.bn2", "layer2.0", "embedding"]
    for name in TAPS:
        torch.testing.assert_close(taps[name], ref[name], rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(emb, ref["pool"].flatten(1), rtol=1e-5, atol=1e-5)
    # bn2's output is overwritten in place by the residual add; the tap kept the true value
    assert not torch.allclose(ref["layer2.0.bn2"], F.relu(ref["layer2.0.bn2"]))


def test_feature_info_from_the_dry_run() -> None:
    model = tap_model(tiny(), {"stem": "conv", "b1": "layer1.0", "b3": "layer2.0"}, embedding="pool", input_size=(32, 32))
    info = {t.name: t for t in model.feature_info}
    assert [t.name for t in model.feature_info] == ["stem", "b1", "b3", "embedding"]
    assert (info["stem"].channels, info["stem"].reduction, info["stem"].module) == (8, 2, "conv")
    assert (info["b3"].channels, info["b3"].reduction, info["b3"].module) == (16, 4, "layer2.0")
    assert (info["embedding"].channels, info["embedding"].module) == (16, "pool")
    assert model.resolve_taps("blocks") == ["stem", "b1", "b3"]
    assert model.info.embedding_dim == 16 and model.info.architecture == "TinyResNet"


def test_embedding_module_stops_the_pass_early(pixels: torch.Tensor) -> None:
    net = tiny()
    calls = []
    net.fc.register_forward_hook(lambda *a: calls.append(1))
    model = tap_model(net, ["layer1.0"], embedding="pool", input_size=(32, 32))
    calls.clear()
    with torch.no_grad():
        model(pixels)
        model.forward_intermediates(pixels, "all")
    assert calls == []  # nothing after the embedding ran
    full = tap_model(net, ["layer1.0"], input_size=(32, 32))  # embedding = the output: fc runs
    calls.clear()
    with torch.no_grad():
        out = full(pixels)
    assert calls == [1] and torch.equal(out, net(pixels))  # Preprocessing() is the identity


def test_embedding_callable(pixels: torch.Tensor) -> None:
    net = tiny()
    model = tap_model(net, [], embedding=lambda out: F.normalize(out, dim=1), input_size=(32, 32), metric="cosine")
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), F.normalize(net(pixels), dim=1))
    assert model.feature_info[-1].channels == 10 and model.feature_info[-1].module == ""


def test_hooks_are_removed_even_on_errors(pixels: torch.Tensor) -> None:
    net = tiny()
    model = tap_model(net, TAPS, embedding="pool", input_size=(32, 32))

    def hooks() -> int:
        return sum(len(m._forward_hooks) for m in net.modules())

    assert hooks() == 0
    with torch.no_grad():
        model.forward_intermediates(pixels, "all")
        model(pixels)
    assert hooks() == 0
    with pytest.raises(RuntimeError):  # float64 pixels meet float32 weights: fails inside the pass
        model.forward_intermediates(pixels.double(), "all")
    assert hooks() == 0


def test_gradients_and_freezing(pixels: torch.Tensor) -> None:
    net = tiny().train()
    model = tap_model(net, ["layer1.1"], embedding="pool", input_size=(32, 32))
    assert not model.training and not net.training and not any(p.requires_grad for p in net.parameters())
    x = pixels.clone().requires_grad_()
    _, taps = model.forward_intermediates(x, ["layer1.1"])
    taps["layer1.1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    kept = tap_model(tiny().train(), ["layer1.1"], input_size=(32, 32), freeze=False)
    assert kept.net.training and all(p.requires_grad for p in kept.net.parameters())
    assert kept.net.bn.training  # the dry run restored the modes it changed


def test_dry_run_does_not_touch_batchnorm_statistics() -> None:
    net = tiny().train()
    before = net.bn.running_mean.clone()
    tap_model(net, ["conv"], input_size=(32, 32), freeze=False)
    assert torch.equal(net.bn.running_mean, before)


def test_unknown_names_list_the_available_ones() -> None:
    with pytest.raises(ConfigError) as err:
        tap_model(tiny(), ["layer1.O", "conv"], input_size=(32, 32))
    msg = str(err.value)
    assert "unknown module name(s) layer1.O (did you mean " in msg
    assert "layer1.0" in msg.split("did you mean")[1].split(")")[0]
    assert "available: conv, bn, relu, layer1, layer1.0, layer1.0.conv1" in msg
    with pytest.raises(ConfigError, match="unknown module name"):
        tap_model(tiny(), [], embedding="features", input_size=(32, 32))


def test_ambiguous_and_unusable_taps_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"layer1.0.relu runs 2 times per forward pass"):
        tap_model(tiny(), ["layer1.0.relu"], input_size=(32, 32))

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seq, _ = self.rnn(x.flatten(2).transpose(1, 2))
            return self.fc(seq[:, -1])

    with pytest.raises(ConfigError, match="module rnn returns a tuple, not a tensor"):
        tap_model(TupleOut(), ["rnn"], input_size=(4, 4))
    with pytest.raises(ConfigError, match=r"has shape \(1, 8, 16, 16\); an embedding must be \(N, D\)"):
        tap_model(tiny(), [], embedding="conv", input_size=(32, 32))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    with pytest.raises(ConfigError, match=r"dry run on a 1x3x32x32 input failed .*give the input_size"):
        tap_model(flat, ["1"], input_size=(32, 32))
    assert tap_model(flat, ["1"], input_size=(8, 8)).info.embedding_dim == 5
    with pytest.raises(ConfigError, match="reserved"):
        tap_model(tiny(), {"embedding": "conv"}, input_size=(32, 32))
    with pytest.raises(ConfigError, match="not one string"):
        tap_model(tiny(), "conv", input_size=(32, 32))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="did not run"):

        class Skips(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.used = nn.Conv2d(3, 4, 1)
                self.unused = nn.Conv2d(3, 4, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.used(x).mean(dim=(2, 3))

        tap_model(Skips(), ["unused"], input_size=(8, 8))


def test_runs_on_another_device(pixels: torch.Tensor) -> None:
    model = tap_model(tiny(), TAPS, embedding="pool", preprocessing=PRE, input_size=(32, 32)).to("meta")
    emb, taps = model.forward_intermediates(torch.empty(2, 3, 32, 32, device="meta"), "all")
    assert emb.device.type == "meta" and emb.shape == (2, 16) and taps["layer2.0"].shape == (2, 16, 8, 8)
    assert isinstance(model, TappedModel)
    on_meta = tap_model(tiny().to("meta"), ["conv"], input_size=(32, 32))  # dry run where the module is
    assert on_meta.preprocess.mean.device.type == "meta"
