"""Face networks behind one interface: pixels in [0, 255] -> embedding plus named taps."""

from .base import FaceModel, ModelInfo, Preprocessing, PixelPreprocess, TapInfo
from .dlib_format import DlibFormatError, read_dlib_net
from .dlib_resnet import DlibResNet, ModelFilesNotFound, find_models_file
from .registry import create_model, list_models, register_model

__all__ = [
    "FaceModel",
    "ModelInfo",
    "Preprocessing",
    "PixelPreprocess",
    "TapInfo",
    "DlibResNet",
    "DlibFormatError",
    "ModelFilesNotFound",
    "read_dlib_net",
    "find_models_file",
    "create_model",
    "list_models",
    "register_model",
]
