"""GRAPPA against pygrappa on a simulated 8-coil phantom, plus its invariants."""

import numpy as np
import pygrappa
import pytest
import sigpy
import sigpy.mri
import torch

from mrirecon.functional import ifft2c, rss
from mrirecon.recon.grappa import acs_region, grappa

H, W, C, ACS = 128, 96, 8, 24
LEFT = W // 2 - ACS // 2


@pytest.fixture(scope="module")
def data():
    img = sigpy.shepp_logan((H, W), dtype=np.complex128)
    yy, xx = np.mgrid[:H, :W]
    img = img * np.exp(1j * 0.5 * np.pi * (xx / W - 0.5) * (yy / H))
    maps = sigpy.mri.birdcage_maps((C, H, W), r=1.2)
    ksp = sigpy.fft(maps * img, axes=(-2, -1))
    rng = np.random.default_rng(0)
    ksp = ksp + 2e-3 * (rng.standard_normal(ksp.shape) + 1j * rng.standard_normal(ksp.shape))
    return ksp.astype(np.complex64)


def _mask(r):
    m = np.zeros(W, dtype=bool)
    m[::r] = True
    m[LEFT : LEFT + ACS] = True
    return m


def _nrmse(k, ref):
    a = rss(ifft2c(torch.as_tensor(k)), 0)
    b = rss(ifft2c(torch.as_tensor(ref)), 0)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("r", [2, 3])
def test_grappa_quality_vs_pygrappa(data, r):
    under = data * _mask(r)
    calib = np.ascontiguousarray(data[..., LEFT : LEFT + ACS])
    ref = pygrappa.grappa(under, calib, kernel_size=(5, 5), coil_axis=0, lamda=0.01)
    # the comparison is only meaningful if pygrappa filled every hole
    assert np.count_nonzero(np.abs(ref[0]) == 0) == 0
    ours = grappa(torch.from_numpy(under), ACS, kernel_size=(5, 5), lam=0.01)
    zero_filled, e_ref, e_ours = _nrmse(under, data), _nrmse(ref, data), _nrmse(ours, data)
    assert e_ours < 0.1 * zero_filled
    assert e_ours <= 1.05 * e_ref, (r, e_ours, e_ref)


@pytest.mark.parametrize("r", [2, 4])
def test_grappa_equals_pygrappa_on_its_training_set(data, r):
    """pygrappa trains on every window of the zero-padded ACS; given that block the fit and the
    filled samples must agree (same Tikhonov definition, same windows, same patterns)."""
    under = data * _mask(r)
    calib = np.ascontiguousarray(data[..., LEFT : LEFT + ACS])
    ref = pygrappa.grappa(under, calib, kernel_size=(5, 5), coil_axis=0, lamda=0.01)
    ours = grappa(
        torch.from_numpy(under), ACS, kernel_size=(5, 5), lam=0.01, pad_calib=True
    ).numpy()
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert rel < 2e-4, rel
    padded = torch.nn.functional.pad(
        torch.from_numpy(calib), (2, 2, 2, 2)
    )  # the same thing by hand
    np.testing.assert_array_equal(grappa(torch.from_numpy(under), padded).numpy(), ours)


def test_grappa_invariants(data):
    under = torch.from_numpy(data * _mask(3))
    mask = torch.from_numpy(_mask(3))
    out = grappa(under, ACS)
    assert out.shape == under.shape and out.dtype == under.dtype
    assert torch.equal(out[..., mask], under[..., mask])  # acquired samples untouched
    assert torch.all(out[..., ~mask].abs().sum(0) > 0)  # every hole filled
    # int ACS width == explicit block; explicit mask == detected mask; chunking is invisible
    torch.testing.assert_close(grappa(under, acs_region(under, ACS)), out, rtol=0, atol=0)
    torch.testing.assert_close(
        grappa(under, ACS, mask=mask, chunk_size=97), out, rtol=1e-6, atol=1e-7
    )
    # double precision agrees with single; an even kernel also works
    out64 = grappa(under.to(torch.complex128), ACS)
    assert _nrmse(out64, out.to(torch.complex128)) < 1e-4
    assert _nrmse(grappa(under, ACS, kernel_size=(4, 6)), torch.from_numpy(data)) < 0.1
    # fully sampled input has no holes: returned unchanged
    full = torch.from_numpy(data)
    assert torch.equal(grappa(full, ACS), full)


def test_grappa_errors(data):
    under = torch.from_numpy(data * _mask(2))
    with pytest.raises(ValueError, match="unacquired columns"):
        grappa(under, ACS + 8)
    with pytest.raises(ValueError, match="coils, H, W"):
        grappa(under[0], ACS)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        grappa(under, under[:, :3, :3])
    with pytest.raises(ValueError, match="mask"):
        grappa(under, ACS, mask=torch.ones(5, dtype=torch.bool))
