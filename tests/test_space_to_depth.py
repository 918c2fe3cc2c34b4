"""The space-to-depth input gradient of a strided convolution equals PyTorch's own.

Reference: ``torch.nn.grad.conv2d_input`` (PyTorch's transposed-convolution gradient), in
float64 so that only a wrong index, not rounding, can make the two differ.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frad.models.space_to_depth import conv2d_s2d_grad, space_to_depth_weight, strided_conv_input_grad

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [
        ((150, 150), 7, 2, 0),  # dlib's stem
        ((112, 112), 3, 2, 1),  # MobileFaceNet's
        ((224, 224), 7, 2, 3),  # SE-ResNet-50's
        ((17, 20), 3, 2, 0),  # the stride leaves a row and a column unreached
        ((23, 19), 4, 3, 2),  # kernel a multiple of neither, stride 3
        ((9, 9), 2, 2, 0),  # kernel a multiple of the stride: no zero padding
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_input_gradient_equals_pytorchs(size, kernel, stride, padding, channels_last):
    g = torch.Generator().manual_seed(sum(size) + kernel)
    w = torch.randn(5, 3, kernel, kernel, generator=g, dtype=torch.float64)
    oh = (size[0] + 2 * padding - kernel) // stride + 1
    ow = (size[1] + 2 * padding - kernel) // stride + 1
    grad_out = torch.randn(2, 5, oh, ow, generator=g, dtype=torch.float64)
    if channels_last:
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_input((2, 3, *size), w, grad_out, stride=stride, padding=padding)
    got = strided_conv_input_grad(grad_out, w, stride, padding, size)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_space_to_depth_weight_turns_the_strided_convolution_into_a_stride_one_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 150, 150, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 7, 7, generator=g, dtype=torch.float64)
    ws = space_to_depth_weight(w, 2)
    assert ws.shape == (4, 12, 4, 4)
    torch.testing.assert_close(F.conv2d(F.pixel_unshuffle(x, 2), ws), F.conv2d(x, w, stride=2), rtol=1e-12, atol=1e-12)


def test_conv_forward_is_bit_for_bit_and_the_gradient_equal_to_float_tolerance():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 32, 7, 2).requires_grad_(False)
    x = (torch.rand(4, 3, 150, 150) * 255).requires_grad_(True)
    y = conv2d_s2d_grad(conv, x)
    assert torch.equal(y, conv(x))
    gy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    (ref,) = torch.autograd.grad(conv(x), x, gy)
    torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_trainable_weights_and_unsupported_convolutions_take_pytorchs_path():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 20).requires_grad_(True)
    conv = nn.Conv2d(3, 4, 3, 2)  # weights require grad: their gradients must still come
    conv2d_s2d_grad(conv, x).sum().backward()
    assert conv.weight.grad is not None and conv.bias.grad is not None
    for plain in (nn.Conv2d(3, 4, 3, 1), nn.Conv2d(3, 4, 3, 2, groups=1, dilation=2), nn.Conv2d(3, 3, 3, 2, groups=3),
                  nn.Conv2d(3, 4, 3, 2, padding=1, padding_mode="reflect"), nn.Conv2d(3, 4, 3, (2, 1))):
        plain.requires_grad_(False)
        y = conv2d_s2d_grad(plain, x)
        assert y.grad_fn is not None and "S2D" not in type(y.grad_fn).__name__
    frozen = nn.Conv2d(3, 4, 3, 2).requires_grad_(False)
    assert "S2D" in type(conv2d_s2d_grad(frozen, x).grad_fn).__name__
    with torch.no_grad():
        assert conv2d_s2d_grad(frozen, x).grad_fn is None
