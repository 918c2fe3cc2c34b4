"""Typed settings and attack kinds (frad.kinds): they behave as their strings wherever a
string reached a file, a key or a fingerprint, and they are carried from the config on.

The stage fingerprints below were computed with main's code before the typed values came
in (string literals in the config); a long run made then must resume, so they may not move.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from frad.attacks.registry import ATTACKS, attack_kind
from frad.errors import ConfigError
from frad.evaluation.scenarios import attack_family, attack_label, verification_row_label
from frad.kinds import KINDS, SETTINGS, AttackKind, Setting
from frad.pipeline.config import config_to_dict, load_config
from frad.pipeline.run import stage_fingerprints

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "frad" / "configs"

# computed with main's code at 59d9ef3 (before frad.kinds), see the module docstring
MAIN_FINGERPRINTS = {
    "demo.yaml": {
        "data": "75eff4d17966b0bc", "features": "79d88eb797e6877c", "classifier": "a984ce9733a7331b",
        "recognition": "fa6279a01e4cef9c", "attacks": "07c61eca3919dcbb", "deep_features": "49ebc05184692888",
        "trajectories": "4a29e21076ecbd68", "detectors": "51f0adadd8a5d327", "benchmark": "fb8830dac985356c",
        "scenarios": "4e5ab55d7fef842d", "transfer": "8205498e0ad73219", "report": "978673ed49c97c57",
    },
    "lfw-dlib.yaml": {
        "data": "135cd38ca4af973c", "features": "83eff6c9b75436a1", "classifier": "939a2e631060f8bf",
        "recognition": "05c6e703885024bf", "attacks": "9030bdab1cd76299", "deep_features": "36d830043f872aa9",
        "trajectories": "87220770bc4ccf18", "detectors": "b87e9829f16c33cd", "benchmark": "8d96696cc8458500",
        "scenarios": "8e71090287cb4519", "transfer": "67b84e21b0dbc861", "report": "b72f2edd459f45a6",
    },
}
# demo.yaml with settings given explicitly (a list in another order, a per-setting override)
VARIANT = {"detection.setting": {"targeted": {"lr": 0.0003}}, "deep_features.settings": ["untargeted"],
           "detection.settings": ["untargeted", "targeted"]}
MAIN_VARIANT = {
    "data": "75eff4d17966b0bc", "features": "79d88eb797e6877c", "classifier": "a984ce9733a7331b",
    "recognition": "fa6279a01e4cef9c", "attacks": "07c61eca3919dcbb", "deep_features": "2f5bbf6f1b00fbbf",
    "trajectories": "c5929c9c0d5c6882", "detectors": "114f849e0dd3ad4f", "benchmark": "c00723483cc43ad9",
    "scenarios": "e7b97457c510db26", "transfer": "318c811358643feb", "report": "1c8b8c8993badb77",
}


def test_members_are_their_strings() -> None:
    t = Setting.TARGETED
    assert t == "targeted" and hash(t) == hash("targeted") and {"targeted": 1}[t] == 1
    assert str(t) == f"{t}" == "targeted" and repr([t]) == repr(["targeted"])
    assert json.dumps({t: [t, AttackKind.DEEP_FEATURES]}, indent=2) == json.dumps(
        {"targeted": ["targeted", "deep_features"]}, indent=2)
    assert (Path("runs") / AttackKind.CLASSIFIER).as_posix() == "runs/classifier"
    assert np.asarray([t, Setting.UNTARGETED]).tolist() == ["targeted", "untargeted"]
    assert SETTINGS == ("targeted", "untargeted") and KINDS == ("classifier", "deep_features")


def test_setting_helpers() -> None:
    assert Setting.of(True) is Setting.TARGETED and Setting.of(np.bool_(False)) is Setting.UNTARGETED
    assert [s.short for s in SETTINGS] == ["T", "UT"] and [s.letter for s in SETTINGS] == ["T", "U"]
    assert Setting.UNTARGETED.heading == "Untargeted" and AttackKind.DEEP_FEATURES.label == "DF"
    with pytest.raises(ConfigError, match="goal: one of 'targeted' / 'untargeted' is needed, got 'both'"):
        Setting.parse("both", "goal")


@pytest.mark.parametrize("name", sorted(MAIN_FINGERPRINTS))
def test_stage_fingerprints_did_not_move(name: str) -> None:
    moved = MOVED_SINCE.get(name, ())
    assert _pinned(stage_fingerprints(load_config(CONFIGS / name)), moved) == _pinned(MAIN_FINGERPRINTS[name], moved)


def test_stage_fingerprints_with_explicit_settings_did_not_move() -> None:
    cfg = load_config(CONFIGS / "demo.yaml", VARIANT)
    assert cfg.deep_features.settings == [Setting.UNTARGETED]
    assert all(isinstance(s, Setting) for s in cfg.detection.settings) and Setting.TARGETED in cfg.detection.setting
    assert _pinned(stage_fingerprints(cfg)) == _pinned(MAIN_VARIANT)


# stages of a shipped config whose settings changed on purpose after the pins: lfw-dlib.yaml's
# trajectory detectors train on a cosine schedule and keep their final weights (issue 16)
MOVED_SINCE = {"lfw-dlib.yaml": ("detectors", "benchmark")}


def _pinned(fingerprints: dict[str, str], moved_too: tuple[str, ...] = ()) -> dict[str, str]:
    """The stages whose fingerprints must not move.  ``report`` moved on purpose after these were
    pinned (version 2, and the new ``security`` stage among its inputs), and ``security`` is new.
    With a peer library installed (ART), ``benchmark`` takes its version among its inputs on
    purpose (the peer then joins the benchmark)."""
    from frad.evaluation.benchmark import peer_versions

    moved = ("report", "security") + (("benchmark",) if peer_versions() else ()) + moved_too
    return {k: v for k, v in fingerprints.items() if k not in moved}


def test_config_carries_typed_settings_and_writes_plain_ones() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    assert all(type(s) is Setting for s in cfg.deep_features.settings + cfg.detection.settings)
    plain = config_to_dict(cfg)
    assert type(plain["detection"]["settings"][0]) is str
    assert yaml.safe_load(yaml.safe_dump(plain))["deep_features"]["settings"] == ["targeted", "untargeted"]
    with pytest.raises(ConfigError, match=r"deep_features\.settings\[0\]: one of 'targeted' or 'untargeted'"):
        load_config(CONFIGS / "demo.yaml", {"deep_features.settings": ["sideways"]})


def test_every_attack_declares_its_kind_and_family() -> None:
    assert attack_kind("deep_features") is AttackKind.DEEP_FEATURES
    assert {n for n in ATTACKS if attack_kind(n) is AttackKind.CLASSIFIER} == set(ATTACKS) - {"deep_features"}
    assert [attack_family(n) for n in ("bim", "mifgsm", "mifgsm_l2", "cw_l2", "deep_features")] == [
        "BIM", "MI-FGSM", "MI-FGSM", "CW", "DF"]


def test_a_new_feature_space_attack_is_labelled_from_its_class(monkeypatch) -> None:
    """A new feature-space attack: its class (kind, family) and one registration are enough
    for the labels the report and the verification tables use."""
    from frad.attacks.deep_features import DeepFeaturesAttack

    class CentroidPull(DeepFeaturesAttack):
        name = "centroid_pull"
        family = "CP"

    monkeypatch.setitem(ATTACKS, "centroid_pull", CentroidPull)
    assert attack_kind("centroid_pull") is AttackKind.DEEP_FEATURES
    assert attack_label("centroid_pull", 5.0) == "CP δ = 5" and attack_label("deep_features", 5.0) == "DF δ = 5"
    assert verification_row_label("deep_features", 7.0) == "δ = 7"
    assert verification_row_label("centroid_pull", 7.0) == "CP δ = 7"
    assert verification_row_label("cw_l2", float("nan")) == "CW"
