"""Backbones: fastMRI-compatible U-Net / NormUnet (same state dict, same outputs), DnCNN, ResNet,
and the complex <-> channel adapter."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models.backbones import ComplexImageCNN, DnCNN, NormUnet, ResNet, Unet, from_channels, to_channels


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 21, 27)], ids=["even", "odd"])
def test_unet_loads_fastmri_state_dict_and_matches(shape):
    fm = pytest.importorskip("fastmri.models")
    torch.manual_seed(0)
    ref = fm.Unet(in_chans=3, out_chans=2, chans=4, num_pool_layers=3).eval()
    ours = Unet(in_chans=3, out_chans=2, chans=4, num_pool_layers=3).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
    # and the other way round: our weights load into the reference
    ref.load_state_dict(Unet(3, 2, 4, 3).state_dict(), strict=True)


def test_normunet_matches_fastmri():
    varnet = pytest.importorskip("fastmri.models.varnet")
    torch.manual_seed(0)
    ref = varnet.NormUnet(chans=4, num_pools=2).eval()
    ours = NormUnet(chans=4, num_pools=2).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = torch.Generator().manual_seed(2)
    x = torch.complex(torch.randn(2, 1, 30, 19, generator=g), torch.randn(2, 1, 30, 19, generator=g)) * 1e-3
    with torch.no_grad():
        ref_out = torch.view_as_complex(ref(torch.view_as_real(x).contiguous()).contiguous())
        assert torch.allclose(ours(x), ref_out, atol=1e-8, rtol=1e-5)


def test_normunet_is_scale_equivariant_and_keeps_size():
    net = NormUnet(chans=4, num_pools=2).eval()
    x = torch.randn(1, 1, 18, 13, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.allclose(net(5.0 * x), 5.0 * out, rtol=1e-4, atol=1e-5)  # normalisation


def test_channel_adapter_round_trip_and_real_input():
    x = torch.randn(2, 3, 5, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    c = to_channels(x)
    assert c.shape == (2, 6, 5, 4) and c.dtype == torch.float64
    assert torch.equal(c[:, :3], x.real) and torch.equal(c[:, 3:], x.imag)
    assert torch.equal(from_channels(c, True), x)
    r = x.real
    assert torch.equal(to_channels(r)[:, 3:], torch.zeros_like(r))
    assert torch.equal(from_channels(to_channels(r), False), r)


def test_complex_image_cnn_keeps_dtype_and_residual():
    cnn = ComplexImageCNN(DnCNN(2, 2, depth=3, features=8, residual=False), residual=True).double()
    for param in cnn.parameters():
        torch.nn.init.zeros_(param)
    x = torch.randn(3, 7, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cnn(x), x)  # zero CNN + residual = identity
    assert torch.equal(cnn(x.real), x.real)
    assert cnn(x[0]).shape == (7, 6)


@pytest.mark.parametrize(
    "net", [DnCNN(2, 2, depth=5, features=8), ResNet(2, 2, features=8, blocks=2), Unet(2, 3, chans=4, num_pool_layers=2)],
    ids=["dncnn", "resnet", "unet"],
)
def test_backbone_shapes_and_gradients(net):
    x = torch.randn(2, 2, 12, 10, generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape[0] == 2 and out.shape[-2:] == (12, 10)
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dncnn_layer_count_and_residual():
    net = DnCNN(2, 2, depth=5, features=16)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and convs[0].out_channels == 16
    with pytest.raises(ValueError, match="residual needs in_chans == out_chans"):
        DnCNN(2, 1)
