"""Reader for dlib's serialised DNN files (``*.dat``), as used by its face recognition ResNet.

dlib writes a network as nested layer wrappers: first every wrapper's version integer
(top of the network first), then the input layer and every layer's record, input side
first.  This module turns the byte stream into a flat list of :class:`LayerRecord` s in
that (input-first) order; :mod:`frad.models.dlib_resnet` maps them onto a PyTorch module.
The format is documented in ``shared/docs/dlib-face-model-format.md``; every read is
bounds-checked so that a truncated or foreign file raises :class:`DlibFormatError`
(never an ``IndexError`` from deep inside the parser).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError

__all__ = ["DlibFormatError", "LayerRecord", "DlibNetFile", "read_dlib_net"]


class DlibFormatError(WeightsError):
    """The file is not a dlib network file of the expected kind, or it is damaged."""


@dataclass
class LayerRecord:
    """One computational layer as stored in the file (``kind`` is dlib's type string)."""

    kind: str
    params: np.ndarray | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The layer kind without dlib's version suffix (``con_4`` -> ``con``)."""
        return self.kind.rsplit("_", 1)[0] if self.kind[-1].isdigit() else self.kind.rstrip("_")


@dataclass
class DlibNetFile:
    """A parsed network: loss description, wrapper kinds and the layer records (input first)."""

    loss: str
    loss_params: tuple[float, ...]
    wrapper_versions: list[int]
    input: LayerRecord
    layers: list[LayerRecord]


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.name}: not a valid dlib network file ({what} at byte {self.pos} of {len(self.data)})"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what}; truncated?")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str = "an integer") -> int:
        ctrl = self.take(1, what)[0]
        n = ctrl & 0x0F
        if n == 0 or n > 8 or (ctrl & 0x70):
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} for {what}")
        value = int.from_bytes(self.take(n, what), "little")
        return -value if ctrl & 0x80 else value

    def bool_(self, what: str = "a bool") -> bool:
        b = self.take(1, what)
        if b not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {b!r} for {what}")
        return b == b"1"

    def str_(self, what: str = "a string", max_len: int = 256) -> str:
        n = self.int_(f"length of {what}")
        if n < 0 or n > max_len:
            raise self.fail(f"implausible length {n} for {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII bytes in {what}") from None

    def float_(self, what: str = "a float") -> float:
        mantissa = self.int_(f"mantissa of {what}")
        exponent = self.int_(f"exponent of {what}")
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def tensor(self, what: str) -> np.ndarray:
        version = self.int_(f"version of {what}")
        if version != 2:
            raise self.fail(f"unknown tensor version {version} for {what}")
        shape = tuple(self.int_(f"shape of {what}") for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative shape {shape} for {what}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self, what: str) -> tuple[int, ...]:
        version = self.int_(f"version of {what}")
        if version != 1:
            raise self.fail(f"unknown alias-tensor version {version} for {what}")
        return tuple(self.int_(f"shape of {what}") for _ in range(4))


def _read_layer(r: _Reader) -> LayerRecord:
    kind = r.str_("a layer type")
    rec = LayerRecord(kind)
    base = rec.base
    f = rec.fields
    if base in ("con",):
        rec.params = r.tensor(f"{kind} parameters")
        for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
            f[key] = r.int_(f"{kind}.{key}")
        f["filters_alias"] = r.alias(f"{kind} filter alias")
        f["bias_alias"] = r.alias(f"{kind} bias alias")
        f["multipliers"] = tuple(r.float_(f"{kind} multiplier") for _ in range(4))
        f["use_bias"] = r.bool_(f"{kind}.use_bias") if kind in ("con_5", "con_6") else True
        if kind == "con_6":
            f["use_relu"] = r.bool_(f"{kind}.use_relu")
    elif base == "affine":
        rec.params = r.tensor(f"{kind} parameters")
        f["gamma_alias"] = r.alias(f"{kind} gamma alias")
        f["beta_alias"] = r.alias(f"{kind} beta alias")
        f["mode"] = r.int_(f"{kind}.mode")
        if kind == "affine_2":
            f["disabled"] = r.bool_(f"{kind}.disabled")
    elif base == "relu":
        if kind == "relu_2":
            f["disabled"] = r.bool_(f"{kind}.disabled")
    elif base in ("max_pool", "avg_pool"):
        for key in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
            f[key] = r.int_(f"{kind}.{key}")
    elif base == "add_prev":
        pass
    elif base == "fc":
        f["num_outputs"] = r.int_(f"{kind}.num_outputs")
        f["num_inputs"] = r.int_(f"{kind}.num_inputs")
        rec.params = r.tensor(f"{kind} parameters")
        f["weights_alias"] = r.alias(f"{kind} weight alias")
        f["bias_alias"] = r.alias(f"{kind} bias alias")
        f["bias_mode"] = r.int_(f"{kind}.bias_mode")
        f["multipliers"] = tuple(r.float_(f"{kind} multiplier") for _ in range(4))
        if kind == "fc_3":
            f["use_bias"] = r.bool_(f"{kind}.use_bias")
    else:
        raise r.fail(f"unsupported layer type {kind!r}")
    return rec


def _read_input(r: _Reader) -> LayerRecord:
    kind = r.str_("the input layer type")
    if kind != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {kind!r} (expected 'input_rgb_image_sized')")
    rec = LayerRecord(kind)
    rec.fields["mean"] = tuple(r.float_("input mean") for _ in range(3))
    rec.fields["nr"] = r.int_("input rows")
    rec.fields["nc"] = r.int_("input columns")
    return rec


def _read_wrapper_tail(r: _Reader, n_tensors: int, what: str) -> None:
    for i in range(3):
        r.bool_(f"flag {i} of {what}")
    for i in range(n_tensors):
        r.tensor(f"state tensor {i} of {what}")


def read_dlib_net(path: str | os.PathLike[str]) -> DlibNetFile:
    """Parse a dlib ``loss_metric`` network file into its layer records, input side first."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"{path}: cannot read dlib network file ({exc.strerror})") from exc
    r = _Reader(data, str(path))
    if not data:
        raise r.fail("empty file")
    if r.int_("loss version") != 1:
        raise r.fail("unknown loss-layer version")
    loss = r.str_("the loss type")
    if not loss.startswith("loss_metric"):
        raise r.fail(f"loss {loss!r} is not a metric-learning loss")
    loss_params = (r.float_("loss margin"), r.float_("loss threshold"))

    versions: list[int] = []
    while True:
        v = r.int_("a layer-wrapper version")
        if v not in (1, 2, 3):
            raise r.fail(f"unknown layer-wrapper version {v}")
        versions.append(v)
        if v == 3:  # the wrapper directly on the input layer ends the nesting
            break
        if len(versions) > 10_000:
            raise r.fail("too many layer wrappers")

    inp = _read_input(r)
    layers = [_read_layer(r)]  # the input wrapper's own computational layer
    _read_wrapper_tail(r, 3, "the input wrapper")
    r.int_("the input wrapper's sample-expansion factor")
    for v in reversed(versions[:-1]):
        if v == 1:  # tag and skip layers store nothing
            continue
        layers.append(_read_layer(r))
        _read_wrapper_tail(r, 3, f"layer {len(layers)}")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    return DlibNetFile(loss, loss_params, versions, inp, layers)
