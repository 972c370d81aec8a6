"""fastMRI's real layout (..., H, W, 2) where a complex tensor is expected: fft2c / ifft2c
transformed the axes (W, 2) and rss kept the trailing 2 (an image (64, 64, 2) for fastMRI's
(64, 64)), silently. They refuse it now, with the hint that recon.zero_filled_rss gives."""

from __future__ import annotations

import pytest
import torch

from mrirecon.functional import fft2c, ifft2c, rss


def _kspace(dtype=torch.complex64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 16, 12, dtype=dtype, generator=g)


@pytest.mark.parametrize("fn", [fft2c, ifft2c], ids=["fft2c", "ifft2c"])
def test_fft_refuses_real_pairs_and_round_trips_their_complex_view(fn):
    k = _kspace()
    pairs = torch.view_as_real(k)  # (4, 16, 12, 2) float32, fastmri.data.transforms.to_tensor
    with pytest.raises(TypeError, match=r"\(4, 16, 12, 2\).*real pairs.*torch\.view_as_complex"):
        fn(pairs)
    # the hinted conversion is the complex k-space itself; the pair of transforms is exact
    back = ifft2c(fft2c(torch.view_as_complex(pairs)))
    torch.testing.assert_close(back, k, rtol=0, atol=16 * torch.finfo(torch.float32).eps * float(k.abs().max()))


def test_fft_keeps_real_images_of_every_other_width():
    """Real images are legitimate inputs (phantoms, magnitudes): only a trailing axis of 2 on
    a stack (ndim >= 3) reads as fastMRI's pairs; a 2-D real image of width 2 still transforms."""
    for shape in [(16, 12), (3, 16, 12), (2, 16, 3), (16, 2), (1, 16, 1)]:
        x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ifft2c(fft2c(x)).real, x, rtol=0, atol=1e-14)


def test_rss_refuses_real_pairs_but_takes_real_coil_magnitudes():
    k = _kspace()
    with pytest.raises(TypeError, match=r"rss: .*real pairs.*torch\.view_as_complex"):
        rss(torch.view_as_real(ifft2c(k)), dim=0)
    with pytest.raises(TypeError, match="torch.view_as_complex"):
        rss(torch.view_as_real(ifft2c(k)))
    want = ifft2c(k).abs().square().sum(0).sqrt()
    torch.testing.assert_close(rss(ifft2c(k), dim=0), want)
    torch.testing.assert_close(rss(ifft2c(k).abs(), dim=0), want)  # real magnitudes: fine
    # summing over the pair axis itself is |z|, as fastMRI's complex_abs: allowed
    torch.testing.assert_close(rss(torch.view_as_real(k), dim=-1), k.abs())
