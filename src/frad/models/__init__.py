"""Face networks behind one interface: pixels in [0, 255] -> embedding plus named taps."""

from .base import FaceModel, ModelInfo, Preprocessing, PixelPreprocess, TapInfo
from .dlib_format import DlibFormatError, read_dlib_net
from .dlib_resnet import DlibResNet, ModelFilesNotFound, find_models_file
from .registry import create_model, list_models, register_model
from .senet import SENet50, load_senet50, senet50_ft
from .adapter import TappedModel, tap_model
from .weights import load_mmdnn_weights, load_pickle_weights, restricted_load
from .tfjs import TFJSGraph, TFJSGraphModule, read_tfjs_graph
from .mobilefacenet import MobileFaceNet, repair_prelu_fusion

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
    "SENet50",
    "load_senet50",
    "senet50_ft",
    "TappedModel",
    "tap_model",
    "restricted_load",
    "load_pickle_weights",
    "load_mmdnn_weights",
    "TFJSGraph",
    "TFJSGraphModule",
    "read_tfjs_graph",
    "MobileFaceNet",
    "repair_prelu_fusion",
]
