"""A plain conv / ReLU stack with each convolution and the ReLU after it run as one oneDNN
call on CPU outside autograd (inference: the pipeline's reconstructions, plug-and-play denoisers).

The fused call applies the ReLU to the convolution's output tile while it is in cache, saving a
pass over every hidden activation (32 x 320 x 320 float32: 0.5 of 9.5 ms per layer on one
thread; the 40 DnCNN calls of a PnP-ADMM slice, 8 x 320 x 320, took 3.20 instead of 3.76 s on
one thread and 1.45 instead of 1.81 s on two, benchmarks/bench_pnp.py), and with the same oneDNN
convolution the values are bit-identical to ``relu(conv(x))`` (tests/models/
test_fused_conv_relu.py). Training, gradients, other devices, dtypes and modules with hooks take
the modules' own forward.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


@functools.lru_cache(maxsize=1)
def _conv_relu_op():
    """``torch.ops.mkldnn._convolution_pointwise`` (PyTorch's own fused CPU convolution, which
    its compiler emits for conv + ReLU), or ``None`` in a build without it. The op is private:
    a torch whose op takes other arguments, or computes something else, fails the one probe
    call made here (a 2 x 5 x 5 input against ``relu(conv(x))``) and gets the modules."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=gen) for s in ((1, 2, 5, 5), (3, 2, 3, 3), (3,)))
        with torch.no_grad():
            got = op(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            want = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
        # 18-term dot products: a float32 bound of 18 eps of the largest output, 4x over
        tol = 72 * torch.finfo(torch.float32).eps * float(want.abs().max())
        return op if got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=tol) else None
    except (AttributeError, RuntimeError, TypeError):
        return None


def _fusable(conv: nn.Module, relu: nn.Module, x: Tensor) -> bool:
    if type(conv) is not nn.Conv2d or type(relu) is not nn.ReLU or _conv_relu_op() is None \
            or not torch.backends.mkldnn.enabled:
        return False
    if conv._forward_hooks or conv._forward_pre_hooks or relu._forward_hooks or relu._forward_pre_hooks:
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4 or conv.weight.dtype != torch.float32:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in [x, *params]))


def sequential_conv_relu(net: nn.Sequential, x: Tensor) -> Tensor:
    """``net(x)``; where allowed, a :class:`~torch.nn.Conv2d` directly followed by a
    :class:`~torch.nn.ReLU` runs as one fused oneDNN call (see the module docstring)."""
    if net._forward_hooks or net._forward_pre_hooks:
        return net(x)
    layers = list(net)
    i = 0
    while i < len(layers):
        conv = layers[i]
        if i + 1 < len(layers) and _fusable(conv, layers[i + 1], x):
            x = _conv_relu_op()(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                                list(conv.dilation), conv.groups, "relu", [], "")
            i += 2
        else:
            x = conv(x)
            i += 1
    return x
