"""SE-ResNet-50 trained on VGGFace2 ("senet50_ft"), the network of Massoli et al.

Architecture (``shared/docs/reference-notes.md``): original ResNet v1 bottlenecks (the
stride sits on the first 1x1 convolution), squeeze-excitation with ratio 16 on every block,
a 3x3/2 stem max-pool with ``ceil_mode=True``, BatchNorm eps 1e-5, 3-4-6-3 blocks, a
2048-d global-average-pooled feature and an 8631-way classifier.  Input: RGB pixels in
[0, 255]; inside the model they become BGR minus the mean (91.4953, 103.8827, 131.0912)
(B, G, R), unscaled; resizing the short side to 256 and centre-cropping 224 is an option.

Taps: ``conv2_1`` ... ``conv5_3`` (the 16 block outputs after the residual add and ReLU, the
paper's trajectory), ``pool`` (the 2048-d pooled feature), ``logits`` and ``embedding``
(= ``pool``, compared with the cosine metric).

The official weights have been offline since 2020; users bring a copy in one of two
formats, both read without running code (:mod:`frad.models.weights`):

- ``"pickle"``: a Python-2 pickle of ``{name: numpy array}`` with the state-dict names of
  this module (``conv1.weight``, ``layer1.0.conv4.bias``, ``fc.weight``, ...);
- ``"mmdnn"``: an MMdnn ``.npy`` dict keyed by Caffe layer names (``conv1/7x7_s2``,
  ``conv2_1_1x1_reduce/bn``, ``conv3_1_1x1_proj``, ``classifier``, ...).

A new N-way head for a chosen set of identities (the paper's 500-way head) is a
:class:`~frad.models.classifier.FaceClassifier` on the embedding::

    net = create_model("senet50_ft", weights="senet50_ft_weight.pkl", num_classes=0)
    clf = FaceClassifier(net, len(ids), class_names=ids, dropout=0.5)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import chain
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..utils.io import sha256_file
from .base import EMBEDDING, FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo
from .weights import FORMATS, WeightFormat, assign_arrays, detect_format, load_mmdnn_weights, load_pickle_weights

__all__ = [
    "SENet50",
    "SEBottleneck",
    "senet50_ft",
    "load_senet50",
    "SENET50_MEAN_BGR",
    "VGGFACE2_NUM_CLASSES",
    "senet50_preprocessing",
    "caffe_name",
]

SENET50_MEAN_BGR: tuple[float, float, float] = (91.4953, 103.8827, 131.0912)
VGGFACE2_NUM_CLASSES = 8631
SE_RATIO = 16
# (bottleneck width, blocks, stride of the first block) for layer1..layer4 = conv2_x..conv5_x
_STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
_HEAD_TAPS = ("pool", "logits")

MISSING_WEIGHTS_MESSAGE = (
    "senet50_ft needs a copy of its VGGFace2 weights, which frad cannot download (the official "
    "release has been offline since 2020): pass weights=PATH to either a Python-2 pickle of "
    "{name: numpy array} with torchvision-style names (senet50_ft_weight.pkl, format='pickle') or an "
    "MMdnn .npy dict keyed by Caffe layer names (format='mmdnn'); pretrained=False builds it with random weights"
)


def senet50_preprocessing(resize_crop: bool = False) -> Preprocessing:
    """RGB [0, 255] -> BGR minus the VGGFace2 mean; optionally short side 256 then centre 224."""
    b, g, r = SENET50_MEAN_BGR
    return Preprocessing(
        mean=(r, g, b),  # Preprocessing takes the mean in RGB order
        scale=1.0,
        channel_order="BGR",
        resize=256 if resize_crop else None,
        crop=224 if resize_crop else None,
    )


class SEBottleneck(nn.Module):
    """ResNet v1 bottleneck with squeeze-excitation, named like the pickle's keys.

    conv1 (1x1, stride) -> bn1 -> ReLU -> conv2 (3x3) -> bn2 -> ReLU -> conv3 (1x1, 4p) -> bn3;
    SE: global mean -> conv4 (4p -> 4p/16) -> ReLU -> conv5 -> sigmoid, multiplied in; then
    the shortcut (identity or downsample = 1x1 conv with stride + BN) is added and ReLU applied.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, downsample: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=1e-5)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out, eps=1e-5)
        self.conv4 = nn.Conv2d(out, out // SE_RATIO, 1, bias=True)
        self.conv5 = nn.Conv2d(out // SE_RATIO, out, 1, bias=True)
        self.downsample: nn.Module | None = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        w = torch.sigmoid(self.conv5(F.relu(self.conv4(F.adaptive_avg_pool2d(y, 1)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y * w + shortcut)


class SENet50(FaceModel):
    """senet50_ft: RGB pixels in [0, 255] -> 2048-d pooled feature, with 16 block taps and logits.

    ``num_classes`` sizes the classifier ``fc`` (8631 for VGGFace2; 0 = no classifier and no
    ``logits`` tap).  Random weights until loaded (see :func:`load_senet50`).  Runs in NCHW
    by default: channels-last measured only 1.03-1.19x faster (batch 1 and 16) on a 2-core CPU
    (``set_memory_format("channels_last")`` turns it on).
    """

    _memory_format = "contiguous"

    def __init__(
        self,
        num_classes: int = VGGFACE2_NUM_CLASSES,
        *,
        preprocessing: Preprocessing | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ConfigError(f"senet50_ft: num_classes must be >= 0 (0 = no classifier), got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"senet50_ft: {len(class_names)} class_names for a {num_classes}-way classifier")
        self.preprocess = PixelPreprocess(preprocessing or senet50_preprocessing())
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        taps: list[TapInfo] = []
        inplanes, reduction = 64, 4
        for s, (planes, blocks, stride) in enumerate(_STAGES):
            reduction *= stride
            layer = []
            for b in range(blocks):
                first = b == 0
                layer.append(SEBottleneck(inplanes, planes, stride if first else 1, downsample=first))
                inplanes = planes * SEBottleneck.expansion
                taps.append(TapInfo(f"conv{s + 2}_{b + 1}", inplanes, reduction, f"layer{s + 1}.{b}"))
            self.add_module(f"layer{s + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Linear | None = nn.Linear(inplanes, num_classes) if num_classes > 0 else None
        self._block_taps = tuple(t.name for t in taps)
        taps.append(TapInfo("pool", inplanes, reduction, "avgpool"))
        if self.fc is not None:
            taps.append(TapInfo("logits", num_classes, reduction, "fc"))
        taps.append(TapInfo(EMBEDDING, inplanes, reduction, "avgpool"))
        self.feature_info = taps
        self.class_names = list(class_names) if class_names is not None else None
        self.info = ModelInfo(
            name="senet50_ft",
            architecture="SE-ResNet-50 (ResNet v1 bottlenecks, squeeze-excitation ratio 16)",
            embedding_dim=inplanes,
            input_size=(224, 224),
            alignment="vggface2-loose-crop",
            metric="cosine",
            license=None,
            source="VGGFace2 senet50_ft (Oxford VGG; official download offline since 2020): the user's own copy",
            paper="Cao et al., VGGFace2, FG 2018; Massoli et al., Detection of Face Recognition Adversarial Attacks, CVIU 2021",
            extra={"num_classes": num_classes, "paper_eer_threshold_cosine_similarity": 0.448},
        )

    @property
    def num_classes(self) -> int:
        return 0 if self.fc is None else int(self.fc.out_features)

    def _is_head_tap(self, name: str) -> bool:
        return name in _HEAD_TAPS

    def _features(self, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        out: dict[str, Tensor] = {}
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for name, block in zip(self._block_taps, chain(self.layer1, self.layer2, self.layer3, self.layer4)):
            x = block(x)
            if name in wanted:
                out[name] = x
        pooled = torch.flatten(self.avgpool(x), 1)
        if "pool" in wanted:
            out["pool"] = pooled
        if "logits" in wanted:
            if self.fc is None:  # resolve_taps already refuses it; kept for direct callers
                raise KeyError("senet50_ft was built without a classifier (num_classes=0): no 'logits' tap")
            out["logits"] = self.fc(pooled)
        return pooled, out

    def logits(self, pixels: Tensor) -> Tensor:
        """The classifier's logits for RGB pixels in [0, 255] (needs ``num_classes > 0``)."""
        return self.forward_intermediates(pixels, ["logits"])[1]["logits"]


# ------------------------------------------------------------------ Caffe (MMdnn) names
_BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_CONV_FIELDS = {"weight": "weights", "bias": "bias"}
_BLOCK_PARTS = {
    "conv1": ("1x1_reduce", False),
    "bn1": ("1x1_reduce", True),
    "conv2": ("3x3", False),
    "bn2": ("3x3", True),
    "conv3": ("1x1_increase", False),
    "bn3": ("1x1_increase", True),
    "conv4": ("1x1_down", False),
    "conv5": ("1x1_up", False),
    "downsample.0": ("1x1_proj", False),
    "downsample.1": ("1x1_proj", True),
}
_BLOCK_RE = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")


def caffe_name(name: str, classifier: str = "classifier") -> tuple[str, str]:
    """The MMdnn ``(layer, field)`` of a state-dict name, e.g. ``layer1.0.bn1.weight`` -> ``conv2_1_1x1_reduce/bn, scale``."""
    m = _BLOCK_RE.match(name)
    if m:
        stage, block, part, param = int(m[1]), int(m[2]), m[3], m[4]
        suffix, is_bn = _BLOCK_PARTS[part]
        layer = f"conv{stage + 1}_{block + 1}_{suffix}" + ("/bn" if is_bn else "")
        return layer, (_BN_FIELDS if is_bn else _CONV_FIELDS)[param]
    module, _, param = name.rpartition(".")
    if module == "conv1":
        return "conv1/7x7_s2", _CONV_FIELDS[param]
    if module == "bn1":
        return "conv1/7x7_s2/bn", _BN_FIELDS[param]
    if module == "fc":
        return classifier, _CONV_FIELDS[param]
    raise KeyError(name)


def _classifier_layer(layers: dict[str, dict[str, np.ndarray]]) -> str:
    # The notes name the head both "classifier" and "classifier_1"; accept the one present.
    return "classifier_1" if "classifier_1" in layers and "classifier" not in layers else "classifier"


def _file_head_size(fmt: str, data: dict) -> int | None:
    if fmt == "pickle":
        w = data.get("fc.weight")
    else:
        w = data.get(_classifier_layer(data), {}).get("weights")
    return int(w.shape[0]) if w is not None and w.ndim >= 1 else None


def _pickle_arrays(
    data: dict[str, np.ndarray], *, keep_head: bool
) -> tuple[dict[str, np.ndarray], Callable[[str], str] | None]:
    arrays = data if keep_head else {k: v for k, v in data.items() if not k.startswith("fc.")}
    return arrays, None


def _mmdnn_arrays(
    layers: dict[str, dict[str, np.ndarray]], model: SENet50, *, keep_head: bool
) -> tuple[dict[str, np.ndarray], Callable[[str], str]]:
    """Caffe-named entries -> state-dict names; entries with no counterpart keep ``layer:field``."""
    classifier = _classifier_layer(layers)
    if not keep_head:
        layers = {k: v for k, v in layers.items() if k != classifier}
    to_torch = {caffe_name(k, classifier): k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    arrays = {
        to_torch.get((layer, field), f"{layer}:{field}"): value
        for layer, fields in layers.items()
        for field, value in fields.items()
    }

    def display(k: str) -> str:
        return k if ":" in k else ":".join(caffe_name(k, classifier))

    return arrays, display


def load_senet50(
    path: str | os.PathLike[str],
    *,
    format: WeightFormat = "auto",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    resize_crop: bool = False,
) -> SENet50:
    """Build senet50_ft from a weight file in either format, frozen and in eval mode.

    ``num_classes``: ``None`` keeps the file's classifier (8631-way for the original
    weights), ``0`` drops it (no ``logits`` tap), ``N`` must equal the file's head size.
    ``class_names`` names the classifier's outputs.  Every missing, unexpected or misshaped
    key is reported in one :class:`WeightsError`, in the file's own naming.
    """
    if format not in FORMATS:
        raise ConfigError(f"senet50_ft: format must be one of {', '.join(FORMATS)}, got {format!r}")
    src = str(path)
    if num_classes is not None and class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"senet50_ft: {len(class_names)} class_names for num_classes={num_classes}")
    if not Path(path).exists():
        raise WeightsError(f"senet50_ft weight file {src} not found")
    fmt = detect_format(path) if format == "auto" else format
    data: dict = load_pickle_weights(path) if fmt == "pickle" else load_mmdnn_weights(path)
    file_classes = _file_head_size(fmt, data)
    if num_classes is None:
        n = file_classes if file_classes is not None else VGGFACE2_NUM_CLASSES
    elif num_classes == 0:
        n = 0
    else:
        if file_classes is not None and file_classes != num_classes:
            raise WeightsError(
                f"{src}: the file's classifier is {file_classes}-way but num_classes={num_classes}; load it with "
                f"num_classes=None (keep it) or 0 (drop it) and put a new head on with "
                f"FaceClassifier(model, {num_classes}, class_names=...)"
            )
        n = num_classes
    if class_names is not None and len(class_names) != n:
        raise ConfigError(f"senet50_ft: {len(class_names)} class_names for the file's {n}-way classifier ({src})")
    model = SENet50(n, preprocessing=senet50_preprocessing(resize_crop), class_names=class_names)

    if fmt == "pickle":
        arrays, display = _pickle_arrays(data, keep_head=n > 0)
    else:
        arrays, display = _mmdnn_arrays(data, model, keep_head=n > 0)
    hint = "a file without the classifier loads with num_classes=0" if file_classes is None and n else ""
    assign_arrays(model, arrays, src, display=display, hint=hint)
    model.info = replace(
        model.info,
        weights=src,
        weights_sha256=sha256_file(path),
        extra={**model.info.extra, "weights_format": fmt},
    )
    model.requires_grad_(False)
    return model.eval()


def senet50_ft(
    weights: str | os.PathLike[str] | None = None,
    *,
    format: WeightFormat = "auto",
    pretrained: bool = True,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    resize_crop: bool = False,
) -> SENet50:
    """SE-ResNet-50 on VGGFace2 (the paper's network) from the user's weight file.

    Without ``weights`` it raises a :class:`WeightsError` saying what to bring, unless
    ``pretrained=False`` asks for random weights (then ``num_classes`` defaults to 8631).
    """
    if weights is not None:
        if not pretrained:
            raise ConfigError("senet50_ft: pretrained=False asks for random weights but weights= names a file; drop one")
        return load_senet50(
            weights, format=format, num_classes=num_classes, class_names=class_names, resize_crop=resize_crop
        )
    if pretrained:
        raise WeightsError(MISSING_WEIGHTS_MESSAGE)
    if format not in FORMATS:
        raise ConfigError(f"senet50_ft: format must be one of {', '.join(FORMATS)}, got {format!r}")
    model = SENet50(
        VGGFACE2_NUM_CLASSES if num_classes is None else num_classes,
        preprocessing=senet50_preprocessing(resize_crop),
        class_names=class_names,
    )
    model.info = replace(model.info, extra={**model.info.extra, "weights_format": "random"})
    model.requires_grad_(False)
    return model.eval()

