"""The face-model registry: names, builders, argument checks, and plugging in a user's network."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from frad.errors import ConfigError
from frad.models import registry
from frad.models.adapter import tap_model
from frad.models.base import FaceModel
from frad.models.registry import create_model, list_models, model_entry, register_model


@pytest.fixture()
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish afterwards (built-ins are loaded first)."""
    list_models()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtin_models_are_listed() -> None:
    assert {"dlib_resnet_v1", "senet50_ft"} <= set(list_models())
    assert list_models("senet*") == ["senet50_ft"]
    assert list_models("nothing*") == []
    assert model_entry("senet50_ft").needs_weights and not model_entry("dlib_resnet_v1").needs_weights
    assert "VGGFace2" in model_entry("senet50_ft").description


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown face model 'senet50'; known models: .*senet50_ft"):
        create_model("senet50")


def test_misspelt_argument_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as err:
        create_model("senet50_ft", weigths="x.pkl")
    msg = str(err.value)
    assert "unknown argument(s) weigths" in msg
    assert "it takes: weights, format, pretrained, num_classes, class_names, resize_crop" in msg


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def test_a_users_network_plugs_in_without_editing_frad(isolated_registry: None) -> None:
    @register_model("my_facenet", description="a user's network")
    def my_facenet(width: int = 16) -> FaceModel:
        return tap_model(_tiny_net(), {"b1": "1", "b2": "3"}, embedding="5", input_size=(width, width), name="my_facenet")

    assert "my_facenet" in list_models()
    model = create_model("my_facenet", width=16)
    assert model.tap_names == ["b1", "b2", "embedding"] and model.info.name == "my_facenet"
    x = torch.rand(2, 3, 16, 16) * 255
    with torch.no_grad():
        emb, taps = model.forward_intermediates(x, "all")
    net = model.net
    with torch.no_grad():
        assert torch.equal(taps["b1"], net[1](net[0](x)))
        assert torch.equal(emb, net(x))
    with pytest.raises(ConfigError, match="unknown argument"):
        create_model("my_facenet", depth=3)


def test_reregistering_warns_and_replaces(isolated_registry: None) -> None:
    register_model("dup")(lambda: "first")  # type: ignore[arg-type,return-value]
    with pytest.warns(UserWarning, match="registered again"):
        register_model("dup")(lambda: "second")  # type: ignore[arg-type,return-value]
    assert create_model("dup") == "second"


def test_builders_taking_kwargs_are_not_second_guessed(isolated_registry: None) -> None:
    register_model("loose")(lambda **kw: kw)  # type: ignore[arg-type,return-value]
    assert create_model("loose", anything=1) == {"anything": 1}


def test_models_command_lists_senet(capsys: pytest.CaptureFixture[str]) -> None:
    from frad.cli import models_cmd

    assert models_cmd.run(argparse.Namespace(pattern="senet*", json=True)) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["name"] for r in rows] == ["senet50_ft"] and rows[0]["needs_weights"] is True
