"""frad's TF.js graph-model reader: parsing checks, refusals, and parity with TensorFlow.js on
a small hand-made graph that uses every op of the face models (SAME padding at stride 2 on
even and odd sizes, fused conv/depthwise, the PReLU pattern, reductions, L2 normalisation)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from frad.errors import WeightsError
from frad.models.tfjs import TFJSGraphModule, read_tfjs_graph, write_tfjs_graph

from tfjs_oracle import run_tfjs


def _s(v: str) -> dict:
    return {"s": base64.b64encode(v.encode()).decode()}


def _conv(name: str, op: str, inputs: list[str], stride: int, padding: str, fused: list[str] | None = None) -> dict:
    attr = {"strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}}, "padding": _s(padding),
            "data_format": _s("NHWC"), "dilations": {"list": {"i": ["1", "1", "1", "1"]}}, "T": {"type": "DT_FLOAT"}}
    if fused is not None:
        attr["fused_ops"] = {"list": {"s": [base64.b64encode(f.encode()).decode() for f in fused]}}
        attr["num_args"] = {"i": "1"}
        attr["epsilon"] = {"f": 0}
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _const(name: str, shape: list[int], dtype: str = "DT_FLOAT") -> dict:
    return {"name": name, "op": "Const", "attr": {"dtype": {"type": dtype}, "value": {"tensor": {
        "dtype": dtype, "tensorShape": {"dim": [{"size": str(s)} for s in shape]}}}}}


def _op(name: str, op: str, inputs: list[str], **attr: dict) -> dict:
    return {"name": name, "op": op, "input": inputs, "attr": {"T": {"type": "DT_FLOAT"}, **attr}}


def make_graph(folder: Path, seed: int = 0) -> Path:
    """A small NHWC graph with the face models' ops, written as model.json + group1-shard1of1.bin."""
    rng = np.random.default_rng(seed)
    consts = {
        "c1/w": rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.3,
        "c1/b": rng.normal(size=(8,)).astype(np.float32) * 0.1,
        "dw/w": rng.normal(size=(3, 3, 8, 1)).astype(np.float32) * 0.3,
        "dw/b": rng.normal(size=(8,)).astype(np.float32) * 0.1,
        "prelu/c": rng.uniform(0.05, 0.3, size=(8,)).astype(np.float32),
        "pw/w": rng.normal(size=(1, 1, 8, 6)).astype(np.float32) * 0.3,
        "pw/b": rng.normal(size=(6,)).astype(np.float32) * 0.1,
        "k/w": rng.normal(size=(2, 2, 6, 5)).astype(np.float32) * 0.3,
        "k/b": rng.normal(size=(5,)).astype(np.float32) * 0.1,
        "mean/axes": np.array([1, 2], np.int32),
        "sum/axes": np.array([1], np.int32),
        "max/y": np.array(1e-10, np.float32),
    }
    nodes = [
        {"name": "input", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"},
                                                         "shape": {"shape": {"dim": [{"size": "-1"}, {"size": "-1"}, {"size": "-1"}, {"size": "3"}]}}}},
        *[_const(k, list(v.shape), "DT_INT32" if v.dtype == np.int32 else "DT_FLOAT") for k, v in consts.items()],
        _conv("c1", "_FusedConv2D", ["input", "c1/w", "c1/b"], 2, "SAME", ["BiasAdd", "Relu"]),
        _conv("dw", "FusedDepthwiseConv2dNative", ["c1", "dw/w", "dw/b"], 2, "SAME", ["BiasAdd"]),
        _op("prelu/relu", "Relu", ["dw"]),
        _op("prelu/abs", "Abs", ["dw"]),
        _op("prelu/sub", "Sub", ["dw", "prelu/abs"]),
        _op("prelu/mul", "Mul", ["prelu/sub", "prelu/c"]),
        _op("prelu/add", "Add", ["prelu/relu", "prelu/mul"]),
        _conv("pw", "_FusedConv2D", ["prelu/add", "pw/w", "pw/b"], 1, "VALID", ["BiasAdd"]),
        _conv("k", "_FusedConv2D", ["pw", "k/w", "k/b"], 1, "SAME", ["BiasAdd"]),
        _op("mean", "Mean", ["k", "mean/axes"], keep_dims={"b": False}),
        _op("sq", "Square", ["mean"]),
        _op("sum", "Sum", ["sq", "sum/axes"], keep_dims={"b": True}),
        _op("max", "Maximum", ["sum", "max/y"]),
        _op("rsqrt", "Rsqrt", ["max"]),
        _op("out", "Mul", ["mean", "rsqrt"]),
    ]
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": [
        {"name": k, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"} for k, v in consts.items()]}]
    doc = {"format": "graph-model", "generatedBy": "test", "convertedBy": "frad tests",
           "modelTopology": {"node": nodes, "library": {}, "versions": {}}, "weightsManifest": manifest,
           "userDefinedMetadata": {"signature": {"outputs": {"out": {"name": "out"}}}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group1-shard1of1.bin").write_bytes(b"".join(v.astype(v.dtype.newbyteorder("<")).tobytes() for v in consts.values()))
    (folder / "model.json").write_text(json.dumps(doc))
    return folder / "model.json"


def run_frad(path: Path, x_nhwc: np.ndarray, nodes: list[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    m = TFJSGraphModule(read_tfjs_graph(path))
    with torch.no_grad():
        out, taps = m.run(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous(), nodes)
    return out.numpy(), {k: (v.permute(0, 2, 3, 1) if v.ndim == 4 else v).numpy() for k, v in taps.items()}


@pytest.mark.parametrize("size", [8, 9, 12])
def test_small_graph_matches_tensorflow_js(tmp_path: Path, size: int) -> None:
    path = make_graph(tmp_path / "g")
    x = np.random.default_rng(size).normal(size=(3, size, size, 3)).astype(np.float32)
    ref_out, ref_c1, ref_dw = run_tfjs(path, x, tmp_path, ["out", "c1", "dw"])
    out, taps = run_frad(path, x, ["c1", "dw"])
    assert out.shape == ref_out.shape
    np.testing.assert_allclose(taps["c1"], ref_c1, atol=1e-5)
    np.testing.assert_allclose(taps["dw"], ref_dw, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)


def test_same_padding_is_asymmetric_like_tensorflow(tmp_path: Path) -> None:
    """Stride 2 on an even size pads 0 before and 1 after; symmetric padding would shift the grid."""
    path = make_graph(tmp_path / "g")
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    (ref_c1,) = run_tfjs(path, x, tmp_path, ["c1"])
    g = read_tfjs_graph(path)
    w = torch.from_numpy(g.weights["c1/w"]).permute(3, 2, 0, 1)
    b = torch.from_numpy(g.weights["c1/b"])
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    sym = torch.relu(torch.nn.functional.conv2d(xt, w, b, 2, 1)).permute(0, 2, 3, 1).numpy()
    asym = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (0, 1, 0, 1)), w, b, 2, 0)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(asym, ref_c1, atol=1e-5)
    assert np.abs(sym - ref_c1).max() > 1e-2


def test_every_node_is_a_tap_and_the_writer_round_trips(tmp_path: Path) -> None:
    path = make_graph(tmp_path / "g")
    g = read_tfjs_graph(path)
    m = TFJSGraphModule(g)
    assert m.output_name == "out"
    x = torch.randn(2, 3, 8, 8)
    out, taps = m.run(x, m.node_names)
    assert set(taps) == set(m.node_names)
    torch.testing.assert_close(taps["out"], out)
    back = write_tfjs_graph(g, tmp_path / "copy", like=path)
    g2 = read_tfjs_graph(back)
    assert [n.name for n in g2.nodes] == [n.name for n in g.nodes]
    for k in g.weights:
        np.testing.assert_array_equal(g.weights[k], g2.weights[k])


def _edit(path: Path, fn) -> Path:  # noqa: ANN001
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return path


def test_damaged_files_get_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = make_graph(tmp_path / "g")
    shard = path.parent / "group1-shard1of1.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:-8])
    with pytest.raises(WeightsError, match=r"model\.json.*(truncated|accounts for)"):
        read_tfjs_graph(path)
    shard.write_bytes(good + b"\0" * 4)
    with pytest.raises(WeightsError, match=r"hold .* bytes but the manifest accounts for"):
        read_tfjs_graph(path)
    shard.write_bytes(good)
    _edit(path, lambda d: d["weightsManifest"][0]["weights"][0].update(dtype="float16"))
    with pytest.raises(WeightsError, match=r"c1/w.*dtype 'float16'"):
        read_tfjs_graph(path)
    _edit(path, lambda d: d["weightsManifest"][0]["weights"][0].update(dtype="float32", shape=[3, 3, 3, 7]))
    with pytest.raises(WeightsError, match=r"c1/w \(shape \[3, 3, 3, 7\], node says \[3, 3, 3, 8\]\)|accounts for"):
        read_tfjs_graph(path)
    _edit(path, lambda d: d["weightsManifest"][0].update(paths=["../../etc/passwd"]))
    with pytest.raises(WeightsError, match="leaves the model's folder"):
        read_tfjs_graph(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"bad\.json: not a TF\.js model\.json"):
        read_tfjs_graph(tmp_path / "bad.json")
    (tmp_path / "layers.json").write_text(json.dumps({"format": "layers-model", "modelTopology": {}}))
    with pytest.raises(WeightsError, match="layers-model"):
        read_tfjs_graph(tmp_path / "layers.json")
    with pytest.raises(WeightsError, match="not found"):
        read_tfjs_graph(tmp_path / "missing.json")


def test_unknown_ops_are_refused_with_their_list(tmp_path: Path) -> None:
    path = make_graph(tmp_path / "g")

    def add_ops(d: dict) -> None:
        d["modelTopology"]["node"].append({"name": "x1", "op": "NonMaxSuppressionV5", "input": ["out"]})
        d["modelTopology"]["node"].append({"name": "x2", "op": "ResizeBilinear", "input": ["out"]})

    _edit(path, add_ops)
    g = read_tfjs_graph(path)  # parsing alone executes nothing and accepts any op
    with pytest.raises(WeightsError, match="unsupported op\\(s\\) NonMaxSuppressionV5, ResizeBilinear"):
        TFJSGraphModule(g)
