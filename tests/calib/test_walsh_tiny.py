"""Walsh maps and the power iteration behind them (and ESPIRiT's) on tiny values: squares of
entries below ~1e-19 flush to zero in float32, and the maps of a noise-free image's background
(coil images near 1e-12) came out with a root-sum-of-squares of 4e15, so CG-SENSE stopped at its
first iteration on non-finite values."""

from __future__ import annotations

import numpy as np
import torch

from mrirecon.calib import walsh_maps
from mrirecon.calib._linalg import power_iteration


def _coil_images(seed=0, coils=5, n=24):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    obj = (((yy - n / 2) ** 2 + (xx - n / 2) ** 2) < (n / 3) ** 2).to(torch.complex64)
    maps = torch.randn(coils, 1, 1, dtype=torch.complex64, generator=g) * torch.exp(
        -((yy - n * torch.rand(coils, 1, 1, generator=g)) ** 2) / (2 * n * n))
    return maps * obj


def test_power_iteration_is_scale_free_down_to_float32_tiny_matrices():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 4, 4, dtype=torch.complex64, generator=g)
    mats = a @ a.mH
    eps = float(torch.finfo(torch.float32).eps)
    v1, l1 = power_iteration(mats, 10)
    for scale in (1e-20, 1e-23, 1e-30):
        v, lam = power_iteration(mats * scale, 10)
        np.testing.assert_allclose(torch.linalg.vector_norm(v, dim=-1), 1.0, atol=8 * eps)
        np.testing.assert_allclose(v, v1, rtol=0, atol=1e3 * eps)  # the same directions
        np.testing.assert_allclose(lam / scale, l1, rtol=1e3 * eps)


def test_walsh_maps_of_a_tiny_image_are_the_maps_of_the_image():
    """Walsh maps are scale-free: a noise-free image at 1e-12 (its background far below) gives
    the maps of the image at 1, with unit root-sum-of-squares where the image is not zero."""
    x = _coil_images()
    big = walsh_maps(x + 1e-3)  # a floor keeps every pixel's covariance away from zero
    small = walsh_maps((x + 1e-3) * 1e-12)
    rss = small.abs().pow(2).sum(0).sqrt()
    eps = float(torch.finfo(torch.float32).eps)
    assert float(rss.max()) <= 1 + 8 * eps and float(rss.min()) >= 1 - 8 * eps
    np.testing.assert_allclose(small, big, rtol=0, atol=1e3 * eps)


def test_walsh_maps_reference_the_strongest_coil_by_default():
    """walsh_maps' docstring: reference_coil defaults to the coil with the most energy, whose map
    is then real and non-negative. Same code path with the index given: bit-identical."""
    n = 24
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                            indexing="ij")
    obj = torch.exp(-((yy - 12) ** 2 + (xx - 11) ** 2) / 50).to(torch.complex128)
    gains = (0.5, 0.9, 2.0, 0.3)  # strongest coil 2: neither the first nor the last nor the weakest
    coils = torch.stack([gn * torch.exp(-((yy - c) ** 2 + (xx - d) ** 2) / 200)
                         * torch.exp(1j * (0.3 * i + xx / 17)) for i, (gn, (c, d))
                         in enumerate(zip(gains, ((0, 0), (0, 23), (23, 0), (23, 23))))])
    images = coils * obj
    strongest = int(torch.argmax(images.abs().square().sum((-2, -1))))
    assert strongest == 2
    default = walsh_maps(images)
    assert torch.equal(default, walsh_maps(images, reference_coil=strongest))
    ref = default[strongest]
    tiny = 16 * torch.finfo(torch.float64).eps
    assert torch.all(ref.imag.abs() <= tiny * ref.abs().clamp_min(tiny)) and torch.all(ref.real >= 0)
