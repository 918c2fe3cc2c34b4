"""senet50_ft's two weight formats, the restricted unpickler, and the loading errors.

The weight files are built here from random arrays with the real names and shapes (full
size, 8631-way head: ~44M floats, ~175 MB per file, once per session).  Names, shapes and
the Caffe (MMdnn) naming are written out from shared/docs/reference-notes.md, independently
of frad's own mapping, so a wrong mapping in frad cannot agree with them by construction.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from frad.errors import ConfigError, WeightsError
from frad.models import create_model
from frad.models.senet import load_senet50
from frad.models.weights import (
    assign_arrays,
    detect_format,
    load_mmdnn_weights,
    load_pickle_weights,
    restricted_load,
)

STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]  # bottleneck width, blocks (conv2_x .. conv5_x)
NUM_CLASSES = 8631
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


# ---------------------------------------------------------------- reference names and files
def senet_shapes(num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of the pickle format, from the reference notes."""
    s: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for p in BN_PARAMS:
            s[f"{prefix}.{p}"] = (c,)

    bn("bn1", 64)
    inp = 64
    for i, (p, n) in enumerate(STAGES, start=1):
        for b in range(n):
            pre = f"layer{i}.{b}"
            s[f"{pre}.conv1.weight"] = (p, inp, 1, 1)
            bn(f"{pre}.bn1", p)
            s[f"{pre}.conv2.weight"] = (p, p, 3, 3)
            bn(f"{pre}.bn2", p)
            s[f"{pre}.conv3.weight"] = (4 * p, p, 1, 1)
            bn(f"{pre}.bn3", 4 * p)
            s[f"{pre}.conv4.weight"] = (4 * p // 16, 4 * p, 1, 1)
            s[f"{pre}.conv4.bias"] = (4 * p // 16,)
            s[f"{pre}.conv5.weight"] = (4 * p, 4 * p // 16, 1, 1)
            s[f"{pre}.conv5.bias"] = (4 * p,)
            if b == 0:
                s[f"{pre}.downsample.0.weight"] = (4 * p, inp, 1, 1)
                bn(f"{pre}.downsample.1", 4 * p)
            inp = 4 * p
    if num_classes:
        s["fc.weight"] = (num_classes, 2048)
        s["fc.bias"] = (num_classes,)
    return s


def random_arrays(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays that keep activations finite through 16 blocks."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("running_mean") or (name.endswith(".bias") and len(shape) == 1):
            a = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BatchNorm scale; small on the residual branch keeps the sum tame
            last = ".bn3." in name or ".downsample.1." in name
            a = rng.uniform(0.1, 0.3, shape) if last else rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        out[name] = np.asarray(a, dtype=np.float32)
    return out


def to_mmdnn(arrays: dict[str, np.ndarray], classifier: str = "classifier") -> dict[str, dict[str, np.ndarray]]:
    """The same arrays keyed by Caffe layer names and MMdnn fields, as the notes describe."""
    d: dict[str, dict[str, np.ndarray]] = {}

    def conv(layer: str, key: str, bias: bool = False) -> None:
        d.setdefault(layer, {})["weights"] = arrays[f"{key}.weight"]
        if bias:
            d[layer]["bias"] = arrays[f"{key}.bias"]

    def bn(layer: str, key: str) -> None:
        d[layer] = {BN_FIELDS[p]: arrays[f"{key}.{p}"] for p in BN_PARAMS}

    conv("conv1/7x7_s2", "conv1")
    bn("conv1/7x7_s2/bn", "bn1")
    for i, (_p, n) in enumerate(STAGES):
        for b in range(n):
            c, pre = f"conv{i + 2}_{b + 1}", f"layer{i + 1}.{b}"
            conv(f"{c}_1x1_reduce", f"{pre}.conv1")
            bn(f"{c}_1x1_reduce/bn", f"{pre}.bn1")
            conv(f"{c}_3x3", f"{pre}.conv2")
            bn(f"{c}_3x3/bn", f"{pre}.bn2")
            conv(f"{c}_1x1_increase", f"{pre}.conv3")
            bn(f"{c}_1x1_increase/bn", f"{pre}.bn3")
            conv(f"{c}_1x1_down", f"{pre}.conv4", bias=True)
            conv(f"{c}_1x1_up", f"{pre}.conv5", bias=True)
            if b == 0:
                conv(f"{c}_1x1_proj", f"{pre}.downsample.0")
                bn(f"{c}_1x1_proj/bn", f"{pre}.downsample.1")
    if "fc.weight" in arrays:
        conv(classifier, "fc", bias=True)
    return d


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2's cPickle wrote: byte and text strings as BINSTRING (py2 str)."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2str(self, obj: bytes | str) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2str
    dispatch[str] = save_py2str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy under Python 2 lived in numpy.core; numpy >= 2 names numpy._core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_pickle(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.write_bytes(py2_pickle(arrays))
    return path


def write_mmdnn(path: Path, layers: dict[str, dict[str, np.ndarray]]) -> Path:
    with open(path, "wb") as f:  # what MMdnn does: np.save of the dict
        np.save(f, layers, allow_pickle=True)
    return path


# ---------------------------------------------------------------- session files and models
@pytest.fixture(scope="session")
def arrays() -> dict[str, np.ndarray]:
    return random_arrays(senet_shapes())


@pytest.fixture(scope="session")
def weight_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("senet-weights")


@pytest.fixture(scope="session")
def pickle_file(weight_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    return write_pickle(weight_dir / "senet50_ft_weight.pkl", arrays)


@pytest.fixture(scope="session")
def mmdnn_file(weight_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    return write_mmdnn(weight_dir / "senet50_ft.npy", to_mmdnn(arrays))


@pytest.fixture(scope="session")
def headless_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if not k.startswith("fc.")}


@pytest.fixture(scope="session")
def headless_file(weight_dir: Path, headless_arrays: dict[str, np.ndarray]) -> Path:
    return write_pickle(weight_dir / "headless.pkl", headless_arrays)


@pytest.fixture(scope="session")
def from_pickle(pickle_file: Path):
    return create_model("senet50_ft", weights=pickle_file)


@pytest.fixture(scope="session")
def from_mmdnn(mmdnn_file: Path):
    return create_model("senet50_ft", weights=mmdnn_file, format="mmdnn")


def test_the_pickle_is_python2_style(pickle_file: Path) -> None:
    """The test file really is a Python-2 pickle: byte strings, numpy.core, no _codecs."""
    data = pickle_file.read_bytes()
    ops = {op.name for op, _arg, _pos in pickletools.genops(data)}
    assert "BINSTRING" in ops and "BINUNICODE" not in ops
    assert b"numpy.core.multiarray" in data and b"_codecs" not in data
    with pytest.raises(UnicodeDecodeError):  # Python 3's default encoding cannot read it...
        pickle.loads(data)
    assert isinstance(pickle.loads(data, encoding="latin1"), dict)  # ...latin1 can


# ---------------------------------------------------------------- both formats load exactly
@pytest.mark.parametrize("fixture", ["from_pickle", "from_mmdnn"])
def test_parameters_equal_the_arrays(request: pytest.FixtureRequest, fixture: str, arrays) -> None:
    model = request.getfixturevalue(fixture)
    state = model.state_dict()
    assert {k for k in state if not k.endswith("num_batches_tracked")} == set(arrays)
    for name, a in arrays.items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], torch.from_numpy(a)), name
    assert model.num_classes == NUM_CLASSES
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_format_detection_and_info(pickle_file: Path, mmdnn_file: Path, from_pickle, from_mmdnn) -> None:
    assert detect_format(pickle_file) == "pickle" and detect_format(mmdnn_file) == "mmdnn"
    assert from_pickle.info.extra["weights_format"] == "pickle"
    assert from_mmdnn.info.extra["weights_format"] == "mmdnn"
    import hashlib

    assert from_pickle.info.weights_sha256 == hashlib.sha256(pickle_file.read_bytes()).hexdigest()
    assert from_pickle.info.weights == str(pickle_file)


def test_both_formats_give_identical_outputs(from_pickle, from_mmdnn) -> None:
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255  # size does not matter here
    with torch.no_grad():
        emb_a, taps_a = from_pickle.forward_intermediates(x, "all")
        emb_b, taps_b = from_mmdnn.forward_intermediates(x, "all")
    assert torch.isfinite(emb_a).all() and emb_a.abs().max() > 0
    assert torch.equal(emb_a, emb_b)
    assert taps_a.keys() == taps_b.keys() and len(taps_a) == 16 + 3
    for k in taps_a:
        assert torch.equal(taps_a[k], taps_b[k]), k
    # the logits are the file's head applied to the pooled feature
    ref = emb_a.double() @ from_pickle.fc.weight.double().T + from_pickle.fc.bias.double()
    torch.testing.assert_close(taps_a["logits"].double(), ref, rtol=1e-5, atol=1e-4)


def test_loaders_return_the_raw_arrays(pickle_file: Path, mmdnn_file: Path, arrays) -> None:
    raw = load_pickle_weights(pickle_file)
    assert raw.keys() == arrays.keys()
    assert all(np.array_equal(raw[k], arrays[k]) and raw[k].dtype == np.float32 for k in arrays)
    layers = load_mmdnn_weights(mmdnn_file)
    assert np.array_equal(layers["conv3_1_1x1_proj/bn"]["var"], arrays["layer2.0.downsample.1.running_var"])
    assert np.array_equal(layers["conv5_3_1x1_up"]["bias"], arrays["layer4.2.conv5.bias"])


def test_classifier_1_name_and_headless_mmdnn(tmp_path: Path, arrays) -> None:
    small = {k: v for k, v in arrays.items() if not k.startswith("fc.")}
    small["fc.weight"] = arrays["fc.weight"][:5]
    small["fc.bias"] = arrays["fc.bias"][:5]
    f = write_mmdnn(tmp_path / "c1.npy", to_mmdnn(small, classifier="classifier_1"))
    model = load_senet50(f, class_names=list("abcde"))
    assert model.num_classes == 5 and model.class_names == list("abcde")
    assert torch.equal(model.fc.weight, torch.from_numpy(small["fc.weight"]))
    headless = load_senet50(f, num_classes=0)
    assert headless.fc is None and "logits" not in headless.tap_names


# ---------------------------------------------------------------- errors: keys, shapes, head
def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, headless_arrays) -> None:
    drop = ("layer2.1.bn2.running_var", "layer4.0.conv4.bias")
    bad = {k: v for k, v in headless_arrays.items() if k not in drop}
    bad["layer1.3.conv1.weight"] = np.zeros((64, 256, 1, 1), np.float32)
    bad["bn1.weight"] = np.ones(32, np.float32)
    with pytest.raises(WeightsError) as err:
        load_senet50(write_pickle(tmp_path / "bad.pkl", bad), num_classes=0)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "bad.pkl") in msg
    assert "missing keys [layer2.1.bn2.running_var, layer4.0.conv4.bias]" in msg
    assert "unexpected keys [layer1.3.conv1.weight]" in msg
    assert "bn1.weight (expected (64,), found (32,))" in msg


def test_mmdnn_errors_use_caffe_names(tmp_path: Path, headless_arrays) -> None:
    layers = to_mmdnn(headless_arrays)
    del layers["conv4_2_3x3/bn"]["var"]
    layers["conv2_4_1x1_reduce"] = {"weights": np.zeros((64, 256, 1, 1), np.float32)}
    layers["conv2_1_1x1_down"]["weights"] = np.zeros((4, 256, 1, 1), np.float32)
    with pytest.raises(WeightsError) as err:
        load_senet50(write_mmdnn(tmp_path / "bad.npy", layers), num_classes=0)
    msg = str(err.value)
    assert "missing keys [conv4_2_3x3/bn:var]" in msg
    assert "unexpected keys [conv2_4_1x1_reduce:weights]" in msg
    assert "conv2_1_1x1_down:weights (expected (16, 256, 1, 1), found (4, 256, 1, 1))" in msg


def test_head_size_choices(pickle_file: Path, headless_file: Path, headless_arrays) -> None:
    with pytest.raises(WeightsError, match=r"8631-way but num_classes=500.*FaceClassifier"):
        load_senet50(pickle_file, num_classes=500)
    with pytest.raises(WeightsError, match=r"missing keys \[fc.weight, fc.bias\].*num_classes=0"):
        load_senet50(headless_file)
    model = load_senet50(headless_file, num_classes=0)
    assert model.num_classes == 0 and model.resolve_taps("all")[-2:] == ["pool", "embedding"]
    assert torch.equal(model.layer4[2].conv5.bias, torch.from_numpy(headless_arrays["layer4.2.conv5.bias"]))
    with pytest.raises(ConfigError, match="3 class_names for num_classes=2"):
        load_senet50(pickle_file, num_classes=2, class_names=["a", "b", "c"])


def test_assign_arrays_checks_before_copying() -> None:
    lin = torch.nn.Linear(3, 2)
    before = lin.weight.clone()
    with pytest.raises(WeightsError, match=r"src: does not fit the network: missing keys \[bias\]"):
        assign_arrays(lin, {"weight": np.zeros((2, 3))}, "src")
    assert torch.equal(lin.weight, before)  # nothing half-loaded
    assign_arrays(lin, {"weight": np.arange(6.0).reshape(2, 3), "bias": np.array([1.0, 2.0])}, "src")
    assert lin.weight.dtype == torch.float32 and lin.weight[1, 2] == 5.0 and lin.bias[1] == 2.0


# ---------------------------------------------------------------- file-level errors
def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_senet50(tmp_path / "nope.pkl")
    z = tmp_path / "model.pth"
    z.write_bytes(b"PK\x03\x04" + b"\0" * 20)
    with pytest.raises(WeightsError, match="zip archive"):
        detect_format(z)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"GIF89a....")
    with pytest.raises(WeightsError, match="neither a pickle nor a .npy"):
        load_senet50(junk)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((2, 3), np.float32))
    with pytest.raises(WeightsError, match=r"plain float32 array of shape \(2, 3\)"):
        load_mmdnn_weights(plain)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.zeros(3)}, protocol=2)[:40])
    with pytest.raises(WeightsError, match="trunc.pkl: not a readable pickle"):
        load_pickle_weights(trunc)
    notdict = tmp_path / "list.pkl"
    notdict.write_bytes(pickle.dumps([np.zeros(3)]))
    with pytest.raises(WeightsError, match="expected a pickled dict"):
        load_pickle_weights(notdict)
    objarr = tmp_path / "obj.pkl"
    objarr.write_bytes(pickle.dumps({"w": np.array([1, "x"], dtype=object)}))
    with pytest.raises(WeightsError, match="entry 'w' has dtype object"):
        load_pickle_weights(objarr)
    with pytest.raises(ConfigError, match="format must be one of auto, pickle, mmdnn"):
        load_senet50(objarr, format="caffe")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the restricted unpickler
class _RunsCode:
    """Pickles to a call of builtins.exec: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(tmp: Path, payload: object) -> Path:
    return write_pickle_bytes(tmp / "evil.pkl", pickle.dumps({"conv1.weight": np.zeros(3), "bn1.weight": payload}, protocol=2))


def write_pickle_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _evil_npy(tmp: Path, payload: object) -> Path:
    return write_mmdnn(tmp / "evil.npy", {"conv1/7x7_s2": {"weights": np.zeros(3)}, "conv1/7x7_s2/bn": {"scale": payload}})


@pytest.mark.parametrize("fmt", ["pickle", "mmdnn"])
@pytest.mark.parametrize("kind", ["exec", "shell"])
def test_code_in_a_weight_file_does_not_run(tmp_path: Path, fmt: str, kind: str) -> None:
    marker = tmp_path / "marker"
    payload = _RunsCode(marker) if kind == "exec" else _RunsShell(marker)
    path = (_evil_pickle if fmt == "pickle" else _evil_npy)(tmp_path, payload)
    with pytest.raises(WeightsError) as err:
        create_model("senet50_ft", weights=path)
    msg = str(err.value)
    assert str(path) in msg and "refusing to load" in msg
    assert ("builtins.exec" if kind == "exec" else f"{os.system.__module__}.system") in msg
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["pickle", "mmdnn"])
def test_the_crafted_files_would_run_code_if_unpickled_plainly(tmp_path: Path, fmt: str) -> None:
    """Positive control: the payload works, so the test above can fail."""
    marker = tmp_path / "marker"
    path = (_evil_pickle if fmt == "pickle" else _evil_npy)(tmp_path, _RunsCode(marker))
    if fmt == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        np.load(path, allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize(
    "module,name,shown",
    [
        ("posix", "system", "posix.system"),
        ("builtins", "eval", "builtins.eval"),
        ("__builtin__", "eval", "builtins.eval"),  # Python-2 spelling is mapped, then refused
        ("builtins", "getattr", "builtins.getattr"),
        ("numpy", "load", "numpy.load"),
        ("torch._utils", "_rebuild_tensor_v2", "torch._utils._rebuild_tensor_v2"),
        ("subprocess", "Popen", "subprocess.Popen"),
    ],
)
def test_forbidden_globals_are_named(module: str, name: str, shown: str) -> None:
    data = f"c{module}\n{name}\n(S'x'\ntR.".encode()  # protocol 0: GLOBAL, MARK, STRING, TUPLE, REDUCE
    with pytest.raises(WeightsError, match=f"src.pkl: refusing to load the pickle: it references {shown},"):
        restricted_load(io.BytesIO(data), source="src.pkl")


def test_codecs_encode_only_for_latin1() -> None:
    ok = pickle.dumps({"b": b"\x00\xff"}, protocol=2)  # Python 3 writes bytes via _codecs.encode(..., 'latin1')
    assert b"_codecs" in ok and restricted_load(io.BytesIO(ok)) == {"b": b"\x00\xff"}
    bad = b"c_codecs\nencode\n(Vabc\nVrot13\ntR."
    with pytest.raises(WeightsError, match="only latin-1"):
        restricted_load(io.BytesIO(bad), source="x")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_numpy_pickles_round_trip(protocol: int) -> None:
    from collections import OrderedDict

    obj = OrderedDict(
        a=np.arange(6, dtype=np.float64).reshape(2, 3),
        b=np.float32(2.5),
        c=[np.int64(3), (1, 2.0, "s"), {"x": None, "y": True}],
        d=np.asfortranarray(np.ones((3, 2), np.float32)),
    )
    back = restricted_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    assert list(back) == ["a", "b", "c", "d"]
    assert np.array_equal(back["a"], obj["a"]) and back["a"].dtype == np.float64
    assert back["b"] == np.float32(2.5) and back["c"][1] == (1, 2.0, "s") and back["c"][2] == {"x": None, "y": True}
    assert np.array_equal(back["d"], obj["d"])


def test_persistent_ids_are_refused() -> None:
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, str) and obj == "t" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"k": "t"})
    buf.seek(0)
    with pytest.raises(WeightsError, match="persistent ids"):
        restricted_load(buf, source="x")
