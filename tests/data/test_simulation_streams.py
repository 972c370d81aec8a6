"""The simulators' documented random streams, coil rotation and photon-count floor."""

import math

import numpy as np
import pytest
import torch

from mrirecon.data.simulate_ct import poisson_postlog


def test_ct_photon_noise_comes_from_stream_1_of_each_sample():
    """Module docstring of simulate_ct: every random choice comes from
    default_rng([seed, sample, stream]); stream 1 is the photon noise only."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    kw = dict(samples=2, geometry="parallel", views=12, size=24, seed=3, sources="phantom",
              min_count=0.1)
    sim = simulate_ct_samples(photons=3000.0, **kw)
    for i in range(2):
        expected = poisson_postlog(sim.clean[i], 3000.0, np.random.default_rng([3, i, 1]), 0.1)
        np.testing.assert_array_equal(sim.sinogram[i], expected)


def test_mri_noise_comes_from_stream_1_of_each_volume():
    """Module docstring of simulate_mri: default_rng([seed, volume, stream]); the noise is
    sigma (n_re + i n_im), n = default_rng([seed, volume, 1]).standard_normal((2, C, H, W))
    per slice, in slice order. Tolerance: complex64 rounding of the k-space (eps32 * |k|)."""
    from mrirecon.data.simulate_mri import simulate_mri_volume

    kw = dict(slices=2, coils=2, size=(32, 24), seed=5)
    noisy = simulate_mri_volume(1, snr_db=20.0, **kw)
    clean = simulate_mri_volume(1, snr_db=None, **kw)
    sigma = noisy.parameters["noise_sigma"]
    rng = np.random.default_rng([5, 1, 1])
    peak = float(noisy.kspace.abs().max())
    for s in range(2):
        n = rng.standard_normal((2,) + tuple(noisy.kspace.shape[1:]))
        expected = clean.kspace[s].to(torch.complex128) + torch.from_numpy(sigma * (n[0] + 1j * n[1]))
        err = float((noisy.kspace[s].to(torch.complex128) - expected).abs().max())
        assert err <= 4 * np.finfo(np.float32).eps * peak, err


def test_birdcage_rotation_by_one_coil_spacing_relabels_the_coils():
    """birdcage_maps: coil c sits at theta_c = 2 pi c / C + rotation, so rotation = 2 pi / C puts
    coil c where coil c + 1 was (a relabelling): maps(rot=2pi/C)[c] == maps(rot=0)[(c+1) % C]."""
    from mrirecon.data.simulate_mri import birdcage_maps

    C = 6
    y, x = np.mgrid[-1:1:21j, -1:1:17j]
    m0 = birdcage_maps(C, x, y, radius=1.4, rotation=0.0)
    m1 = birdcage_maps(C, x, y, radius=1.4, rotation=2 * np.pi / C)
    np.testing.assert_allclose(m1, np.roll(m0, -1, axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("min_count", [0.1, 0.5, 1.0, 3.0])
def test_starved_rays_are_floored_at_min_count(min_count):
    """Rays with I0 exp(-p) ~ 1e-9 photons record 0 counts (probability 1 - 1e-9 each): their
    post-log value is log(I0 / min_count) exactly (LoDoPaB: 0.1 with 4096 photons), whatever
    min_count is; rays of many photons are untouched by the floor."""
    photons = 4096.0
    clean = np.full((4, 64), 30.0)  # I0 exp(-30) = 3.8e-10 expected counts
    clean[:, :8] = 0.0             # unattenuated rays: ~4096 counts
    y = poisson_postlog(clean, photons, np.random.default_rng(0), min_count=min_count)
    np.testing.assert_allclose(y[:, 8:], math.log(photons / min_count), rtol=1e-12)
    assert np.all(np.abs(y[:, :8]) < 10 / math.sqrt(photons))  # |log(N/I0)| ~ 1/sqrt(I0)


class _Draws:
    """A stand-in for numpy's Generator in ``_resample_source``: fill 0.8, angle 0, no shift, and
    the flip draw ``flip_u`` (``uniform()`` without arguments)."""

    def __init__(self, flip_u: float) -> None:
        self.flip_u = flip_u

    def uniform(self, low=0.0, high=1.0, size=None):
        import numpy as np

        if size is not None:
            return np.zeros(size)  # the shift
        if (low, high) == (0.0, 1.0):
            return self.flip_u
        return 0.8 if low > 0 else 0.0  # fill in [0.6, 1), angle in [-pi, pi)


def test_simulated_ct_sources_are_mirrored_when_the_flip_is_drawn():
    """Fails if simulate_ct.py:141 the flip never applied: the augmentation of DICOM sources
    mirrors the image left-right when its flip draw is below 0.5, exactly (the grid is
    symmetric about its centre), and leaves it unmirrored otherwise."""
    import numpy as np

    from mrirecon.data.simulate_ct import _resample_source

    hu = np.full((40, 40), -1000.0)
    hu[8:30, 6:14] = 500.0  # an asymmetric object: an L
    hu[24:30, 6:30] = 200.0
    plain = _resample_source(hu, (32, 32), _Draws(0.9))
    mirrored = _resample_source(hu, (32, 32), _Draws(0.1))
    assert not np.allclose(plain, plain[:, ::-1])  # the test image is asymmetric
    np.testing.assert_allclose(mirrored, plain[:, ::-1], atol=1e-9)
