"""``sequential_conv_relu``: the fused conv + ReLU inference path of the plain CNN stacks (DnCNN,
the DPIR denoiser) computes what the modules compute, and only outside autograd."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mrirecon.models import ComplexImageCNN, DnCNN
from mrirecon.models.backbones import fused
from mrirecon.models.backbones.fused import sequential_conv_relu
from mrirecon.models.inference import ready_for_inference
from mrirecon.models.pnp import NoiseLevelDenoiser

needs_fused_op = pytest.mark.skipif(fused._conv_relu_op() is None, reason="no oneDNN fused convolution")


def _conv_tolerance(net: nn.Sequential, ref: torch.Tensor) -> float:
    """Float32 bound for the same convolutions summed in another order: each output is a dot
    product of ``9 C_in`` terms (error <= ``9 C_in eps`` of the sum of magnitudes, taken as
    the output's scale), and the layers add up."""
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    terms = sum(m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    return terms * torch.finfo(torch.float32).eps * float(ref.abs().max())


@needs_fused_op
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_path_equals_the_modules_forward(batchnorm, channels_last):
    torch.manual_seed(0)
    model = DnCNN(2, 2, depth=8, features=32, batchnorm=batchnorm).eval()
    if channels_last:
        model = ready_for_inference(model, "cpu")
    x = torch.randn(3, 2, 37, 29)  # odd sizes, a batch
    with torch.no_grad():
        ref = model.net(x)  # nn.Sequential's own forward: conv, then ReLU
        got = sequential_conv_relu(model.net, x)
    torch.testing.assert_close(got, ref, atol=_conv_tolerance(model.net, ref), rtol=0)


@needs_fused_op
def test_fused_path_is_taken_at_inference_and_not_under_autograd(monkeypatch):
    calls = []
    op = fused._conv_relu_op()
    monkeypatch.setattr(fused, "_conv_relu_op", lambda: (lambda *a: calls.append(1) or op(*a)))
    model = DnCNN(2, 2, depth=4, features=8, batchnorm=False)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        model(x)
    assert len(calls) == 3  # every conv followed by a ReLU
    calls.clear()
    out = model(x)  # training: gradients through the modules, no fused call
    out.square().sum().backward()
    assert not calls and all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        copy.deepcopy(model).double()(x.double())  # float64: the modules
        assert not calls
        hooked = []
        model.net[0].register_forward_hook(lambda *a: hooked.append(1))
        model(x)  # a hook on the first conv: that layer runs as a module, so the hook runs
    assert len(calls) == 2 and hooked


@needs_fused_op
def test_denoisers_give_the_same_image_fused_and_unfused():
    torch.manual_seed(1)
    dncnn = ComplexImageCNN(DnCNN(2, 2, depth=8, features=32, batchnorm=False)).eval()
    level = NoiseLevelDenoiser(depth=5, features=16).eval()
    x = torch.randn(2, 24, 40, dtype=torch.complex64)
    for model, args in ((dncnn, ()), (level, (0.05,))):
        with torch.no_grad():
            got = model(x, *args)
        with torch.enable_grad():  # weights require grad: the modules' own forward
            ref = model(x, *args).detach()
        net = model.cnn.net if model is dncnn else model.net
        torch.testing.assert_close(got, ref, atol=_conv_tolerance(net, ref), rtol=0)


@pytest.mark.parametrize("bad", ["signature", "values"])
def test_a_private_op_that_changed_is_not_used(monkeypatch, bad):
    """``torch.ops.mkldnn._convolution_pointwise`` is private: a torch whose op takes other
    arguments or returns other values fails the probe, and the modules run instead."""
    def changed(x, w, b, *args):
        if bad == "signature" and len(args) != 4:
            raise RuntimeError("mkldnn::_convolution_pointwise() expected 7 arguments")
        return torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1)) + 1.0

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", changed, raising=False)
    fused._conv_relu_op.cache_clear()
    try:
        assert fused._conv_relu_op() is None
        model = DnCNN(2, 2, depth=4, features=8, batchnorm=False).eval()
        x = torch.randn(1, 2, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(sequential_conv_relu(model.net, x), model.net(x), rtol=0, atol=0)
    finally:
        monkeypatch.undo()
        fused._conv_relu_op.cache_clear()
