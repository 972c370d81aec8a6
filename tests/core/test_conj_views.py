"""Lazily conjugated tensors (``y.conj()``, as torch returns it: a view with the conjugate bit)
through the public API give what the same values resolved give. They failed in 12 of 16 entry
points with torch's "view_as_real doesn't work on unresolved conjugated tensors": the finiteness
check, the squared moduli and the wavelet's real view read them with ``view_as_real``."""

from __future__ import annotations

import warnings

import pytest
import torch

from mrirecon import recon
from mrirecon.calib import espirit_maps, svd_compress, walsh_maps
from mrirecon.core.magnitude import abs2, sum_abs2
from mrirecon.functional import fft2c, ifft2c
from mrirecon.operators import sense
from mrirecon.training.weights import load_pretrained

C, H, W = 4, 32, 32


def _problem():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    x = ((yy ** 2 + xx ** 2) < 0.5).to(torch.complex64) * torch.exp(1j * xx).to(torch.complex64)
    maps = torch.stack([torch.exp(-((yy - a) ** 2 + xx ** 2)) * torch.exp(1j * a * yy)
                        for a in (-1.0, -0.3, 0.3, 1.0)]).to(torch.complex64)
    maps = maps / sum_abs2(maps, 0).sqrt()
    mask = torch.zeros(W)
    mask[::2] = 1
    mask[12:20] = 1
    return x, maps, mask


def _close(got, want):
    """Equal to a few float32 roundings of the result's scale (a conjugated input may take
    another kernel path, so not bit for bit)."""
    eps = torch.finfo(torch.float32).eps
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=64 * eps * max(scale, 1e-30))


CALLS = {
    "zero_filled": lambda y, A, k, m: recon.run("zero_filled", y, A),
    "zero_filled_rss": lambda y, A, k, m: recon.run("zero_filled_rss", y, A),
    "cg_sense": lambda y, A, k, m: recon.run("cg_sense", y, A, iterations=3),
    "l1_wavelet": lambda y, A, k, m: recon.run("l1_wavelet", y, A, lam=1e-3, iterations=3),
    "tv": lambda y, A, k, m: recon.run("tv", y, A, lam=1e-3, iterations=3),
    "grappa": lambda y, A, k, m: recon.run("grappa", y, A, calib=8),
    "data_scale": lambda y, A, k, m: recon.data_scale(y),
    "espirit_maps": lambda y, A, k, m: espirit_maps(k, calib_width=16),
    "walsh_maps": lambda y, A, k, m: walsh_maps(ifft2c(k)),
    "svd_compress": lambda y, A, k, m: svd_compress(k, 2),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_conjugate_view_gives_what_its_resolved_values_give(name):
    x, maps, mask = _problem()
    A = sense(maps, mask)
    y, k = A(x).conj(), fft2c(maps * x).conj()
    assert y.is_conj() and k.is_conj()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = CALLS[name](y, A, k, mask)
        want = CALLS[name](y.resolve_conj(), A, k.resolve_conj(), mask)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        if isinstance(w, torch.Tensor):
            _close(g, w)
        else:
            assert g == w


def test_conjugate_maps_and_a_shipped_model_on_conjugate_k_space():
    x, maps, mask = _problem()
    A, A_resolved = sense(maps.conj(), mask), sense(maps.conj().resolve_conj(), mask)
    y = A_resolved(x)
    _close(recon.run("l1_wavelet", y, A, lam=1e-3, iterations=3),
           recon.run("l1_wavelet", y, A_resolved, lam=1e-3, iterations=3))
    model = load_pretrained("modl_brain_sim").eval()
    with torch.inference_mode():
        _close(model(y.conj()[None], A_resolved), model(y.conj().resolve_conj()[None], A_resolved))


def test_moduli_of_a_conjugate_view_are_those_of_its_values_and_differentiable():
    z = torch.randn(3, 5, dtype=torch.complex64, requires_grad=True)
    zc = z.conj()
    assert torch.equal(abs2(zc), abs2(zc.resolve_conj()))
    assert torch.equal(sum_abs2(zc, (-1, -2)), sum_abs2(zc.resolve_conj(), (-1, -2)))
    abs2(zc).sum().backward()
    torch.testing.assert_close(z.grad, 2 * z.detach(), rtol=0, atol=0)
