"""Plotting helpers: point-spread functions of known masks, image grids."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from mrirecon.viz import image_grid, point_spread_function


def test_psf_of_full_mask_is_a_centred_delta():
    psf = point_spread_function(torch.ones(12), shape=(10, 12))
    expected = torch.zeros(10, 12, dtype=torch.float64)
    expected[5, 6] = 1.0
    assert psf.shape == (10, 12) and psf.dtype == torch.float64
    assert torch.allclose(psf, expected, atol=1e-12)


def test_psf_of_equispaced_mask_has_ghosts_at_w_over_r():
    w, r = 32, 4
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::r] = True  # every 4th column: R copies of the point, equally strong
    psf = point_spread_function(mask, shape=(8, w))
    ghosts = [(w // 2 + k * w // r) % w for k in range(r)]
    assert torch.allclose(psf[4, ghosts], torch.ones(r, dtype=torch.float64), atol=1e-12)
    rest = psf.clone()
    rest[4, ghosts] = 0
    assert float(rest.max()) < 1e-12


def test_psf_matches_numpy_reference_for_a_2d_mask():
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=(9, 14)) < 0.4
    mask[4, 7] = True
    ref = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(mask.astype(float)))))
    psf = point_spread_function(mask)
    assert np.allclose(psf.numpy(), ref / ref.max(), atol=1e-12)


def test_psf_errors_name_the_problem():
    with pytest.raises(ValueError, match="column mask needs shape"):
        point_spread_function(torch.ones(8))
    with pytest.raises(ValueError, match="8 columns but shape is"):
        point_spread_function(torch.ones(8), shape=(4, 6))
    with pytest.raises(ValueError, match="samples nothing"):
        point_spread_function(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(W,\), \(1, W\) or \(H, W\)"):
        point_spread_function(torch.ones(2, 3, 4))


def test_image_grid_shows_magnitudes_in_a_grid():
    import matplotlib.pyplot as plt

    z = torch.full((1, 5, 6), 3 + 4j, dtype=torch.complex64)  # magnitude 5, singleton squeezed
    fig, axes = image_grid([z, np.ones((5, 6)), torch.zeros(5, 6)], ["a", "b", "c"], ncols=2,
                           vmax=[None, 2.0, 1.0])
    try:
        assert len(axes) == 4 and [ax.get_visible() for ax in axes] == [True, True, True, False]
        assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
        shown = axes[0].get_images()[0].get_array()
        assert np.allclose(np.asarray(shown), 5.0)
        assert axes[1].get_images()[0].get_clim()[1] == 2.0
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        image_grid([np.ones((3, 3))] * 2, ["x"])
    with pytest.raises(ValueError, match=r"must be 2-D \(H, W\)"):
        image_grid([np.ones((2, 3, 3))])
    with pytest.raises(ValueError, match="no images"):
        image_grid([])


@pytest.mark.parametrize("n, grid", [(1, (1, 1)), (6, (1, 6)), (7, (2, 6)), (13, (3, 6))])
def test_image_grid_puts_at_most_six_images_in_a_row_by_default(n, grid):
    import matplotlib.pyplot as plt

    fig, axes = image_grid([np.eye(4)] * n)
    try:
        assert axes.size == grid[0] * grid[1]
        shape = axes[0].get_subplotspec().get_gridspec().get_geometry()
        assert shape == grid
        assert sum(ax.get_visible() for ax in axes) == n
    finally:
        plt.close(fig)
