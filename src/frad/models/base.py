"""The face-model interface every network in frad implements.

A :class:`FaceModel` takes a batch of RGB pixels in [0, 255] (float, N x 3 x H x W), does its
own preprocessing inside ``forward`` (so gradients reach the pixels and attacks never see
normalised tensors), and returns the embedding.  ``forward_intermediates`` returns the
embedding together with any of the model's named taps from the same single pass.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.allocator import keep_freed_memory_once

__all__ = [
    "TapInfo",
    "Preprocessing",
    "ModelInfo",
    "FaceModel",
    "speedups_off",
    "PixelPreprocess",
    "check_pixels",
    "to_pixels",
    "embed_images",
    "module_device",
    "module_fingerprint",
    "MemoryFormat",
    "MEMORY_FORMATS",
]

EMBEDDING = "embedding"

#: How a :class:`FaceModel` lays out its convolution weights and activations internally.
#: ``channels_last`` (NHWC) is faster on CPUs (benchmarks/bench_floor.py); ``contiguous``
#: is PyTorch's default NCHW.  Pixels, gradients and returned maps are NCHW either way.
MemoryFormat = Literal["channels_last", "contiguous"]
MEMORY_FORMATS: tuple[str, ...] = ("channels_last", "contiguous")
DEFAULT_MEMORY_FORMAT: MemoryFormat = "channels_last"


@dataclass(frozen=True)
class TapInfo:
    """Describes one tap: its name, channel count, stride w.r.t. the network input, module path."""

    name: str
    channels: int
    reduction: int
    module: str


@dataclass(frozen=True)
class Preprocessing:
    """Maps RGB pixels in [0, 255] to the network's input, differentiably.

    ``mean`` is given in RGB order and pixel units; the input is ``(pixel - mean) * scale``,
    reordered to ``channel_order``.  ``resize`` optionally resizes the short side to
    ``resize`` pixels and ``crop`` centre-crops a square of that side (both bilinear/exact,
    so gradients flow).
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    channel_order: Literal["RGB", "BGR"] = "RGB"
    resize: int | None = None
    crop: int | None = None

    def fingerprint(self) -> str:
        return repr(sorted(asdict(self).items()))


@dataclass(frozen=True)
class ModelInfo:
    """What a pretrained face model is and expects (timm's ``PretrainedCfg`` in spirit)."""

    name: str
    architecture: str
    embedding_dim: int
    input_size: tuple[int, int]
    alignment: str
    metric: Literal["euclidean", "cosine"] = "cosine"
    weights: str | None = None
    weights_sha256: str | None = None
    license: str | None = None
    source: str | None = None
    paper: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def check_pixels(x: Tensor) -> None:
    """Raise a clear error unless ``x`` is a float N x 3 x H x W batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor of RGB pixels, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected pixels of shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float pixels in [0, 255], got dtype {x.dtype}; call .float() first")


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def module_fingerprint(module: nn.Module, *salt: str) -> str:
    """A stable hash of a module's weights and of every :class:`PixelPreprocess` inside it
    (whose mean is a non-persistent buffer and whose resize/crop are not tensors at all)."""
    h = hashlib.sha256()
    for s in salt:
        h.update(s.encode())
    for m in module.modules():
        if isinstance(m, PixelPreprocess):
            h.update(m.spec.fingerprint().encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def to_pixels(images: np.ndarray | Tensor, device: torch.device | str | None = None) -> Tensor:
    """H x W x 3 (or N x H x W x 3) uint8 RGB images -> float N x 3 x H x W pixels in [0, 255]."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {tuple(t.shape)}")
    return t.to(device=device).permute(0, 3, 1, 2).float().contiguous()


@torch.no_grad()
def embed_images(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """Embeddings (float32, N x D) of N x H x W x 3 uint8 images, computed in batches."""
    from ..utils.progress import progress

    device = torch.device(device) if device is not None else module_device(model)
    out = []
    starts = range(0, len(images), batch_size)
    for i in progress(starts, desc=desc or "embedding", total=len(starts), unit="batch"):
        out.append(model(to_pixels(images[i : i + batch_size], device)).float().cpu().numpy())
    dim = out[0].shape[1] if out else 0
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


class PixelPreprocess(nn.Module):
    """Differentiable preprocessing from RGB [0, 255] pixels to network input."""

    def __init__(self, spec: Preprocessing) -> None:
        super().__init__()
        self.spec = spec
        order = [0, 1, 2] if spec.channel_order == "RGB" else [2, 1, 0]
        mean = torch.tensor([spec.mean[i] for i in order], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.order = order

    def forward(self, x: Tensor) -> Tensor:
        s = self.spec
        if s.resize is not None:
            h, w = x.shape[-2:]
            if min(h, w) != s.resize:
                k = s.resize / min(h, w)
                size = (max(s.resize, round(h * k)), max(s.resize, round(w * k)))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=k < 1)
        if s.crop is not None:
            h, w = x.shape[-2:]
            if h < s.crop or w < s.crop:
                raise ValueError(f"cannot centre-crop {s.crop} from an input of {h}x{w}")
            top, left = (h - s.crop) // 2, (w - s.crop) // 2
            x = x[..., top : top + s.crop, left : left + s.crop]
        if self.order != [0, 1, 2]:
            x = x[:, self.order]
        x = x - self.mean
        if s.scale != 1.0:
            x = x * s.scale
        return x


class _ToChannelsLast(torch.autograd.Function):
    """NCHW -> channels-last copy whose backward hands the gradient back in NCHW layout,
    so callers of a channels-last model see the same strides as with a default one."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


def _to_channels_last(x: Tensor) -> Tensor:
    if x.ndim != 4 or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return _ToChannelsLast.apply(x) if x.requires_grad else x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def speedups_off(module: nn.Module) -> Iterator[None]:
    """Run every face model inside ``module`` with its speed settings off for the block
    (NCHW layout, plain graph), then put the settings back.

    The speed settings keep outputs equal to float tolerance, but some attacks turn float
    rounding into other adversarials (L-BFGS-B's line searches; Carlini-Wagner's adversarials,
    which sit on the decision boundary, survive rounding to uint8 or not by a hair).  Run
    inside this block, such an attack gives bit for bit what a run with the settings off gives.
    """
    models = [m for m in module.modules() if isinstance(m, FaceModel)]
    saved = [(m.memory_format, m.fused) for m in models]
    try:
        for m in models:
            m.set_memory_format("contiguous").set_fused(False)
        yield
    finally:
        for m, (memory_format, fused) in zip(models, saved):
            m.set_memory_format(memory_format).set_fused(fused)


class FaceModel(nn.Module):
    """Base class: pixels in [0, 255] -> embedding, with named taps from the same pass.

    Subclasses set ``info``, ``feature_info`` (one :class:`TapInfo` per tap, input side first,
    ``embedding`` last) and ``preprocess``, and implement :meth:`_features`.

    Internally the network runs in :attr:`memory_format` (default ``channels_last``, faster on
    CPUs; see :meth:`set_memory_format`); inputs, returned maps and input gradients stay NCHW.
    """

    info: ModelInfo
    feature_info: list[TapInfo]
    preprocess: nn.Module
    _memory_format: MemoryFormat = DEFAULT_MEMORY_FORMAT
    _weights_format: str | None = None  # the layout the 4-d weights were last converted to
    _fused: bool = True

    @property
    def fused(self) -> bool:
        """Whether the network runs its cheaper, equivalent graph (default ``True``).

        What that means is the subclass's business (dlib's network: max-pool before the stem's
        ReLU, in-place ReLU and residual add, the stem's input gradient as a stride-1
        convolution); outputs are the same as with ``fused=False`` (bit for bit for dlib's
        rewrites) and input gradients equal to float tolerance (see ``tests/test_fused.py``).
        """
        return self._fused

    def set_fused(self, fused: bool) -> FaceModel:
        """Run the cheaper equivalent graph (``True``) or the plain one (``False``); returns ``self``."""
        if not isinstance(fused, bool):
            raise ValueError(f"fused must be True or False, got {fused!r}")
        self._fused = fused
        return self

    @property
    def memory_format(self) -> MemoryFormat:
        """The internal layout: ``channels_last`` (NHWC, default) or ``contiguous`` (NCHW)."""
        return self._memory_format

    def set_memory_format(self, memory_format: MemoryFormat) -> FaceModel:
        """Run the network in ``memory_format`` from now on (results equal to float tolerance).

        Returns ``self``.  ``contiguous`` turns the channels-last speed-up off.
        """
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
        self._memory_format = memory_format
        self._apply_memory_format()
        return self

    def _apply_memory_format(self) -> None:
        fmt = torch.channels_last if self._memory_format == "channels_last" else torch.contiguous_format
        with torch.no_grad():
            for p in (*self.parameters(), *self.buffers()):
                if p.ndim == 4 and not p.is_contiguous(memory_format=fmt):
                    p.data = p.data.contiguous(memory_format=fmt)
        self._weights_format = self._memory_format

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._weights_format = None  # an unpickled copy re-checks its weights' layout on first use

    def _network_input(self, pixels: Tensor) -> Tensor:
        """Preprocessed pixels in the layout the network runs in (weights converted on first use)."""
        if self._weights_format != self._memory_format:
            self._apply_memory_format()
        if pixels.device.type == "cpu":
            keep_freed_memory_once()
        x = self.preprocess(pixels)
        return _to_channels_last(x) if self._memory_format == "channels_last" else x

    @property
    def tap_names(self) -> list[str]:
        """All tap names, input side first (the embedding is the last)."""
        return [t.name for t in self.feature_info]

    @property
    def device(self) -> torch.device:
        return module_device(self)

    def resolve_taps(self, taps: Iterable[str] | str | None) -> list[str]:
        """Normalise a tap request (None = all, 'blocks' = all but the embedding) and check names."""
        names = self.tap_names
        if taps is None or taps == "all":
            return names
        if taps == "blocks":
            return [n for n in names if n != EMBEDDING and not self._is_head_tap(n)]
        if isinstance(taps, str):
            taps = [taps]
        taps = list(taps)
        unknown = [t for t in taps if t not in names]
        if unknown:
            raise KeyError(f"{self.info.name}: unknown tap(s) {unknown}; available: {names}")
        return taps

    def _is_head_tap(self, name: str) -> bool:
        """Taps after the last residual block (pooled features, logits) are not trajectory taps."""
        return False

    def _features(self, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the network on preprocessed input; return the embedding and the wanted taps."""
        raise NotImplementedError

    def forward_intermediates(
        self, pixels: Tensor, taps: Sequence[str] | str | None = None, *, pool: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(embedding, {tap: output})`` from one pass; ``pool`` averages maps to vectors."""
        check_pixels(pixels)
        names = self.resolve_taps(taps)
        emb, out = self._features(self._network_input(pixels), set(names))
        result: dict[str, Tensor] = {}
        for n in names:
            t = emb if n == EMBEDDING else out[n]
            if t.ndim == 4:
                t = t.mean(dim=(2, 3)) if pool else t.contiguous()
            result[n] = t
        return emb, result

    def forward(self, pixels: Tensor) -> Tensor:
        """The embedding of RGB pixels in [0, 255]."""
        check_pixels(pixels)
        return self._features(self._network_input(pixels), set())[0]

    def fingerprint(self) -> str:
        """A stable hash of weights and preprocessing: a cache key that changes with either."""
        return module_fingerprint(self, self.info.name)

    def extra_repr(self) -> str:
        return f"name={self.info.name!r}, taps={len(self.feature_info)}"
