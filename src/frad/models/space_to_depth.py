"""A strided convolution whose input gradient runs as a stride-1 convolution (space-to-depth).

The input gradient of a stride-``s`` convolution over few channels (a face network's stem: 3
colours, 7x7, stride 2) is a transposed convolution to 3 channels with stride ``s``, which
oneDNN runs poorly on CPUs: dlib's stem took 17% of a forward and input-gradient pass at
batch 32.  Rearranged, the same sum is a stride-1 transposed convolution to ``C x s x s``
channels (the kernel zero-padded to a multiple of ``s`` and split into its ``s x s`` phases)
followed by a depth-to-space shuffle: 2.6x faster on dlib's stem at batch 32, CPU
(``benchmarks/bench_stem_gradient.py``).  The forward pass is the plain convolution, so
outputs stay bit for bit; the input gradient is the same sum in another order (equal to float
tolerance, ~5e-7 relative).  CUDA keeps PyTorch's own gradient (not measured there).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["space_to_depth_weight", "strided_conv_input_grad", "conv2d_s2d_grad"]


def space_to_depth_weight(weight: Tensor, stride: int) -> Tensor:
    """``(O, C, kh, kw)`` -> ``(O, C*s*s, ceil(kh/s), ceil(kw/s))``: the kernel zero-padded to a
    multiple of ``stride`` and split into its phases, in :func:`~torch.nn.functional.pixel_unshuffle`'s
    channel order, so ``conv2d(pixel_unshuffle(x, s), w', stride=1)`` equals ``conv2d(x, w, stride=s)``."""
    o, c, kh, kw = weight.shape
    s = stride
    ph, pw = -(-kh // s), -(-kw // s)
    w = F.pad(weight, (0, pw * s - kw, 0, ph * s - kh))
    return w.reshape(o, c, ph, s, pw, s).permute(0, 1, 3, 5, 2, 4).reshape(o, c * s * s, ph, pw)


def strided_conv_input_grad(
    grad_out: Tensor, weight: Tensor, stride: int, padding: int, input_size: tuple[int, int]
) -> Tensor:
    """The gradient w.r.t. the input of ``conv2d(x, weight, stride=stride, padding=padding)``
    (dilation 1, one group) for ``x`` of spatial size ``input_size``, given ``grad_out``."""
    s = stride
    ws = space_to_depth_weight(weight, s).contiguous(memory_format=_format_of(grad_out))
    g = _depth_to_space(F.conv_transpose2d(grad_out, ws), s)  # w.r.t. the padded input
    h, w = input_size[0] + 2 * padding, input_size[1] + 2 * padding
    # rows past the padded input only ever met the kernel's zero padding: cropping them is exact;
    # rows the convolution never reached (a remainder of the stride) get no gradient
    g = g[..., :h, :w]
    if g.shape[-2] < h or g.shape[-1] < w:
        g = F.pad(g, (0, w - g.shape[-1], 0, h - g.shape[-2]))
    if padding:
        g = g[..., padding : padding + input_size[0], padding : padding + input_size[1]]
    return g


def _depth_to_space(y: Tensor, s: int) -> Tensor:
    """:func:`~torch.nn.functional.pixel_shuffle` into NCHW whatever ``y``'s layout: one copy
    (pixel_shuffle keeps a channels-last input channels-last, and the caller wants NCHW pixels)."""
    n, cs, h, w = y.shape
    c = cs // (s * s)
    return y.view(n, c, s, s, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * s, w * s)


def _format_of(t: Tensor) -> torch.memory_format:
    return torch.channels_last if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


class _Conv2dS2DGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.conf = (stride, padding, tuple(x.shape[-2:]))
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        stride, padding, size = ctx.conf
        return strided_conv_input_grad(grad, weight, stride, padding, size), None, None, None, None


def conv2d_s2d_grad(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, with the input gradient computed by :func:`strided_conv_input_grad` when
    only the input needs one (an attack: weights frozen) and it is on the CPU; otherwise
    ``conv(x)`` as it is."""
    w, b = conv.weight, conv.bias
    if (x.device.type != "cpu" or not x.requires_grad or not torch.is_grad_enabled() or w.requires_grad
            or (b is not None and b.requires_grad) or not _plain_strided(conv)):
        return conv(x)
    return _Conv2dS2DGrad.apply(x, w, b, conv.stride[0], conv.padding[0])  # type: ignore[no-any-return]


def _plain_strided(conv: nn.Conv2d) -> bool:
    """Square stride > 1 and symmetric int padding, zero-padded, dilation 1, one group."""
    p = conv.padding
    return (
        conv.stride[0] == conv.stride[1] > 1 and isinstance(p, tuple) and p[0] == p[1]
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    )
