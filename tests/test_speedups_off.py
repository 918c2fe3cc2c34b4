"""Attacks that turn float rounding into other adversarials run with the speed settings off:
``speedups_off`` switches every face model inside a module to NCHW and its plain graph and back,
the attack runner does so for the attacks named in ``speedups_off_for``, and the pipeline's
``model.speedups_off_for`` is checked and stays out of the fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frad.attacks import RunConfig, load_results, run_attacks
from frad.errors import ConfigError
from frad.models.base import speedups_off
from frad.models.classifier import FaceClassifier
from tiny_models import TinyFace

pytestmark = pytest.mark.usefixtures("one_thread")


def _classifier() -> tuple[TinyFace, FaceClassifier]:
    face = TinyFace(0, size=8)
    clf = FaceClassifier(face, 4, dropout=0.0)
    with torch.no_grad():
        clf.head[1].weight.mul_(5)
    return face, clf.eval()


def test_speedups_off_switches_every_face_model_inside_and_restores_them():
    face, clf = _classifier()
    face.set_memory_format("channels_last").set_fused(True)
    with speedups_off(clf):
        assert (face.memory_format, face.fused) == ("contiguous", False)
        assert face.c1.weight.is_contiguous() and not face.c1.weight.is_contiguous(memory_format=torch.channels_last)
    assert (face.memory_format, face.fused) == ("channels_last", True)
    # restored after an error too, and a model already off stays off
    with pytest.raises(RuntimeError, match="boom"), speedups_off(face):
        raise RuntimeError("boom")
    assert (face.memory_format, face.fused) == ("channels_last", True)
    face.set_memory_format("contiguous").set_fused(False)
    with speedups_off(clf):
        pass
    assert (face.memory_format, face.fused) == ("contiguous", False)


def _run(tmp_path: Path, face: TinyFace, clf: FaceClassifier, x: np.ndarray, y: np.ndarray,
         **kw) -> list[tuple[str, bool]]:
    """Run BIM and CW on ``x``; the (layout, fused) the face model had at every forward pass of
    the attacks (not the runner's one-image pass that counts the classifier's classes)."""
    seen: list[tuple[str, bool]] = []
    hook = face.register_forward_pre_hook(
        lambda m, args: seen.append((m.memory_format, m.fused)) if len(args[0]) > 1 else None)
    cfg = RunConfig.from_dict({"seed": 1, "shard_size": 3, "batch_size": 3, "attacks": [
        {"attack": "bim", "targeted": False, "epsilon": 0.05, "steps": 3},
        {"attack": "cw_l2", "targeted": False, "steps": 5, "binary_search_steps": 2, "stepsize": 0.05}]})
    try:
        for spec in cfg.attacks:  # one attack at a time, to tell whose passes they were
            start = len(seen)
            one = RunConfig.from_dict({**cfg.to_dict(), "attacks": [spec.to_dict()]})
            run_attacks(one, tmp_path, images=x, labels=y, classifier=clf, **kw)
            seen[start:] = [(spec.attack, *s) for s in seen[start:]]  # type: ignore[misc]
    finally:
        hook.remove()
    return seen  # type: ignore[return-value]


def test_runner_turns_the_speedups_off_only_for_the_named_attacks(tmp_path):
    face, clf = _classifier()
    face.set_memory_format("channels_last").set_fused(True)
    x = (torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 255).numpy()
    with torch.no_grad():
        y = clf(torch.as_tensor(x)).argmax(1).numpy()
    seen = _run(tmp_path / "fast", face, clf, x, y, speedups_off_for=["cw_l2"])
    assert {s for s in seen if s[0] == "bim"} == {("bim", "channels_last", True)}
    assert {s for s in seen if s[0] == "cw_l2"} == {("cw_l2", "contiguous", False)}
    assert (face.memory_format, face.fused) == ("channels_last", True)  # put back after the run

    # the named attack's results are those of a model with the settings off, bit for bit
    face.set_memory_format("contiguous").set_fused(False)
    _run(tmp_path / "off", face, clf, x, y)
    fast, off = load_results(tmp_path / "fast"), load_results(tmp_path / "off")
    np.testing.assert_array_equal(fast.adversarials("cw_l2-U"), off.adversarials("cw_l2-U"))
    np.testing.assert_array_equal(fast.table["success_quantised"][fast.rows("cw_l2-U")],
                                  off.table["success_quantised"][off.rows("cw_l2-U")])


def test_unknown_attack_names_are_refused(tmp_path):
    face, clf = _classifier()
    cfg = RunConfig.from_dict({"attacks": [{"attack": "cw_l2", "steps": 2, "binary_search_steps": 1}]})
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="speedups_off_for: unknown attack 'cw'"):
        run_attacks(cfg, tmp_path, images=x, labels=[0, 1], classifier=clf, speedups_off_for=["cw"])


def test_pipeline_setting_is_checked_and_is_not_part_of_any_fingerprint():
    from frad.pipeline.config import load_config, section_hash

    path = Path(__file__).parents[1] / "configs" / "demo.yaml"
    default = load_config(path)
    assert default.model.speedups_off_for == ["cw_l2", "deep_features"]
    none = load_config(path, {"model.speedups_off_for": []})
    assert none.model.speedups_off_for == []
    assert section_hash({"model": none.model}) == section_hash({"model": default.model})
    with pytest.raises(ConfigError, match=r"model\.speedups_off_for: unknown attack 'cwl2'"):
        load_config(path, {"model.speedups_off_for": ["cwl2"]})
