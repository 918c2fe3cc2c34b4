"""The .dat reader: the real file parses completely; damaged or foreign files fail clearly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frad.errors import WeightsError
from frad.models import DlibFormatError, find_models_file, read_dlib_net
from frad.models.dlib_resnet import DlibResNet

DAT = find_models_file("dlib_face_recognition_resnet_model_v1.dat")
DATA = DAT.read_bytes()


def test_real_file_parses_to_the_documented_network() -> None:
    net = read_dlib_net(DAT)
    assert net.loss == "loss_metric_2"
    assert net.loss_params == pytest.approx((0.04, 0.6), abs=1e-6)
    assert len(net.wrapper_versions) == 130
    assert net.input.fields["mean"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    kinds = Counter(layer.base for layer in net.layers)
    assert kinds == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "avg_pool": 5, "max_pool": 1, "fc": 1}
    assert sum(layer.params.size for layer in net.layers if layer.params is not None) == 5_614_592


def test_scalar_encoding_examples_from_the_format_notes(tmp_path: Path) -> None:
    from frad.models.dlib_format import _Reader

    r = _Reader(bytes.fromhex("0100" "0196" "811c"), "x")
    assert [r.int_(), r.int_(), r.int_()] == [0, 150, -28]


@pytest.mark.parametrize("cut", [0, 1, 10, 200, 5_000, len(DATA) // 2, len(DATA) - 1])
def test_truncated_file_is_a_clear_error(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "cut.dat"
    p.write_bytes(DATA[:cut])
    with pytest.raises(DlibFormatError, match=str(p)):
        DlibResNet.from_dat(p)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=len(DATA) - 1), st.integers(min_value=0, max_value=255))
def test_corrupted_byte_never_escapes_as_a_parser_crash(pos: int, value: int) -> None:
    data = bytearray(DATA)
    data[pos] = value
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".dat") as f:
        f.write(bytes(data))
        f.flush()
        try:
            DlibResNet.from_dat(f.name)
        except WeightsError:
            pass  # a clear error; a changed weight value loads fine, and that is also correct


@pytest.mark.parametrize(
    "content",
    [b"", b"\x89PNG\r\n\x1a\n" + bytes(100), b"hello world, not a network", bytes(range(256)) * 10],
    ids=["empty", "png", "text", "binary"],
)
def test_foreign_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "foreign.dat"
    p.write_bytes(content)
    with pytest.raises(DlibFormatError, match="not a valid dlib network file"):
        read_dlib_net(p)


def test_other_dlib_model_is_refused_with_reason() -> None:
    # the 5-point landmark model is a dlib file, but not a network
    with pytest.raises(DlibFormatError):
        DlibResNet.from_dat(find_models_file("shape_predictor_5_face_landmarks.dat"))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DlibFormatError, match="cannot read"):
        read_dlib_net(tmp_path / "nope.dat")


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "long.dat"
    p.write_bytes(DATA + b"\x00\x01")
    with pytest.raises(DlibFormatError, match="trailing"):
        read_dlib_net(p)


def test_weights_match_the_file() -> None:
    """The folded conv weights reproduce dlib's conv + affine on the stem."""
    net = read_dlib_net(DAT)
    conv, aff = net.layers[0], net.layers[1]
    w = conv.params.reshape(-1)[: 32 * 3 * 7 * 7].reshape(32, 3, 7, 7)
    b = conv.params.reshape(-1)[32 * 3 * 7 * 7 :]
    g, beta = aff.params.reshape(-1)[:32], aff.params.reshape(-1)[32:]
    model = DlibResNet.from_dat(DAT)
    np.testing.assert_allclose(model.stem.weight.numpy(), w * g[:, None, None, None], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.stem.bias.numpy(), b * g + beta, rtol=1e-6, atol=1e-7)
