"""Non-Cartesian trajectories (normalised units) and density compensation."""

import math

import numpy as np
import pytest
import torch

from mrirecon.functional.density import gridding_gain, pipe_menon_density, radial_density
from mrirecon.functional.nufft import nufft, nufft_adjoint
from mrirecon.sampling import (
    GOLDEN_ANGLE_FULL,
    radial_trajectory,
    spiral_trajectory,
    stack_of_stars,
    tiny_golden_angle,
)
from mrirecon.sampling.nonuniform import GAMMA_HZ_PER_T


def _angles(traj):
    end = traj[:, -1]
    return torch.atan2(end[:, 0], end[:, 1]).numpy()


def test_tiny_golden_angles():
    assert tiny_golden_angle(1) == pytest.approx(GOLDEN_ANGLE_FULL)
    assert math.degrees(tiny_golden_angle(7)) == pytest.approx(23.6281, abs=1e-3)  # Wundrak 2016
    traj = radial_trajectory(12, 16, golden=True, tiny=7)
    step = np.mod(np.diff(_angles(traj)), math.pi)
    np.testing.assert_allclose(step, tiny_golden_angle(7), atol=1e-9)
    with pytest.raises(ValueError, match="n must be >= 1"):
        tiny_golden_angle(0)


def test_radial_seed_rotates_the_pattern():
    a = radial_trajectory(5, 8, seed=1)
    assert torch.equal(a, radial_trajectory(5, 8, seed=1))
    assert not torch.allclose(a, radial_trajectory(5, 8, seed=2))
    # a rotation: radii unchanged, relative angles unchanged
    torch.testing.assert_close(a.norm(dim=-1), radial_trajectory(5, 8).norm(dim=-1))
    assert a.min() >= -0.5 and a.max() < 0.5


@pytest.mark.parametrize("edge", [1.0, 3.0])
def test_spiral_respects_gradient_and_slew_limits(edge):
    n, fov, dwell, gmax, smax = 96, 0.24, 4e-6, 30e-3, 120.0
    traj = spiral_trajectory(n, fov, 8, undersampling_edge=edge, max_gradient=gmax,
                             max_slew=smax, dwell_time=dwell)
    assert traj.shape[0] == 8 and traj.min() >= -0.5 and traj.max() < 0.5
    k = (traj[0, :, 1] + 1j * traj[0, :, 0]).numpy() * (n / fov)  # cycles / m
    grad = np.diff(k) / dwell / GAMMA_HZ_PER_T  # T / m
    slew = np.diff(grad) / dwell
    assert np.abs(grad).max() <= gmax and np.abs(slew).max() <= smax
    assert np.abs(k).max() > 0.97 * n / (2 * fov)  # reaches the resolution
    # interleaves are rotations of the first by 2 pi i / 8
    z = traj[..., 1] + 1j * traj[..., 0]
    np.testing.assert_allclose(z[3].numpy(), (z[0] * np.exp(2j * np.pi * 3 / 8)).numpy(), atol=1e-12)


def test_variable_density_spiral_is_shorter():
    uni = spiral_trajectory(96, 0.24, 8)
    vd = spiral_trajectory(96, 0.24, 8, undersampling_edge=3.0)
    assert vd.shape[1] < 0.75 * uni.shape[1]


def test_stack_of_stars():
    traj = stack_of_stars(4, 6, 16)
    assert traj.shape == (4, 6, 16, 3)
    np.testing.assert_allclose(traj[:, 0, 0, 0].numpy(), [-0.5, -0.25, 0.0, 0.25])
    # each partition is a rotated golden-angle star with the same radii
    r = traj[..., 1:].norm(dim=-1)
    torch.testing.assert_close(r[2], r[0])
    assert not torch.allclose(traj[1, ..., 1:], traj[0, ..., 1:])


def test_stack_of_stars_turns_each_partition_by_a_golden_step_per_spoke_count():
    """Partition p is partition 0 turned by p * tiny_golden_angle(tiny) / spokes (interleaved
    neighbours), measured as the angle of every spoke's outermost sample; unrotated partitions
    are equal."""
    from mrirecon.sampling.nonuniform import tiny_golden_angle

    parts, spokes = 3, 6
    for tiny in (1, 2):
        traj = stack_of_stars(parts, spokes, 16, tiny=tiny)
        ang = torch.atan2(traj[:, :, 0, 1], traj[:, :, 0, 2])  # (ky, kx) of the first sample
        for p in range(1, parts):
            turn = torch.remainder(ang[p] - ang[0] + math.pi, 2 * math.pi) - math.pi
            want = torch.full_like(turn, p * tiny_golden_angle(tiny) / spokes)
            # the clip at 0.5 moves a sample by <= one ulp of 0.5: float64 angle error ~1e-15
            torch.testing.assert_close(turn, want, rtol=0, atol=1e-12)
    flat = stack_of_stars(parts, spokes, 16, rotate_partitions=False)
    assert torch.equal(flat[1, ..., 1:], flat[0, ..., 1:])


def _phantom(n):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    x = ((yy / 0.7) ** 2 + (xx / 0.5) ** 2 < 1).double()
    x = x + 0.5 * ((yy - 0.2) ** 2 + xx**2 < 0.1).double()
    return x.to(torch.complex128)


@pytest.mark.parametrize("method", ["ramp", "pipe_menon"])
def test_gridding_has_the_right_intensity_scale(method):
    n = 48
    traj = radial_trajectory(90, 2 * n, golden=True)
    w = radial_density(traj, (n, n)) if method == "ramp" else pipe_menon_density(traj, (n, n))
    # the weights stand for the sampled disc of radius 1/2: sum = H W pi / 4
    assert float(w.sum()) / (n * n) == pytest.approx(math.pi / 4, rel=0.05)
    x = _phantom(n)
    grid = nufft_adjoint(w * nufft(x, traj), traj, (n, n))
    inside = x.real > 0.9
    assert float(grid.real[inside].mean() / x.real[inside].mean()) == pytest.approx(1.0, abs=0.03)
    assert float((grid - x).norm() / x.norm()) < 0.1
    # without compensation the scale is far off (the test can fail)
    plain = nufft_adjoint(nufft(x, traj), traj, (n, n))
    assert abs(float(plain.real[inside].mean() / x.real[inside].mean()) - 1) > 0.5


def test_pipe_menon_matches_ramp_on_radial_and_works_on_spirals():
    n = 48
    traj = radial_trajectory(90, 2 * n)
    ramp, pm = radial_density(traj, (n, n)), pipe_menon_density(traj, (n, n))
    mid = slice(n // 2 + 4, 3 * n // 2 - 4)  # away from the centre and the edge
    ratio = (pm / ramp)[:, mid]
    assert abs(float(ratio.mean()) - 1) < 0.05
    spiral = spiral_trajectory(n, 0.2, 12)
    w = pipe_menon_density(spiral, (n, n))
    x = _phantom(n)
    grid = nufft_adjoint(w * nufft(x, spiral), spiral, (n, n))
    assert float((grid - x).norm() / x.norm()) < 0.15


@pytest.mark.parametrize("golden", [False, True])
def test_centre_out_ramp_weights_grid_at_the_right_intensity(golden):
    """Centre-out spokes (half lines over 2 pi): each sample stands for rho * (2 pi / S) * drho,
    so the weights cover the sampled disc of radius 1/2 (sum = H W pi / 4) and grid a smooth
    object at its intensity. Full spokes are covered by test_gridding_has_the_right_intensity_scale;
    the centre-out angular step (2 pi / S, not pi / S) was pinned by nothing."""
    n = 48
    traj = radial_trajectory(180, n, center_out=True, golden=golden)
    w = radial_density(traj, (n, n))
    # Riemann sum of the disc area: relative error O(drho / R) = O(1 / n) ~ 2 %
    assert float(w.sum()) / (n * n) == pytest.approx(math.pi / 4, rel=0.05)
    assert gridding_gain(w, traj, (n, n)) == pytest.approx(1.0, abs=0.03)


def test_ramp_sampled_centre_out_spokes_grid_at_the_right_intensity():
    """Fails if the ramp weights take one sample step for every sample (measured between spoke
    0's first two): on UTE spokes whose gradient ramps up over the first 12 of 48 samples the
    gridded image came out at 0.095 of the object's intensity (1.02 with each sample's own
    stretch of its spoke; Pipe-Menon's iteration 0.998)."""
    h = w = 64
    t = np.arange(48, dtype=float)
    g = np.minimum(t / 12.0, 1.0)
    k = np.concatenate([[0.0], np.cumsum((g[1:] + g[:-1]) / 2)])
    rho = k / k[-1] * 0.499
    theta = np.arange(201) * 2 * np.pi / 201
    traj = torch.from_numpy(np.stack([rho[None] * np.sin(theta)[:, None],
                                      rho[None] * np.cos(theta)[:, None]], -1))
    # the analytic ramp's own error at this sampling is ~2 % (evenly spaced spokes too)
    assert abs(gridding_gain(radial_density(traj, (h, w)), traj, (h, w)) - 1) < 0.05


@pytest.mark.parametrize("offset", [0.0, 0.25, 0.5, 0.75])
def test_centre_out_spokes_starting_off_the_centre_are_still_centre_out(offset):
    """Fails if centre-out spokes whose first sample lies half a step or more from k = 0 are
    taken for full spokes (every ramp weight halved: a gridded image at 0.499), or if full
    spokes are taken for centre-out ones."""
    from mrirecon.functional.density import centre_out_spokes

    h = w = 64
    step = 0.49 / (31 + offset)
    r = (offset + np.arange(32)) * step
    theta = np.arange(201) * 2 * np.pi / 201
    spokes = torch.from_numpy(np.stack([r[None] * np.sin(theta)[:, None],
                                        r[None] * np.cos(theta)[:, None]], -1))
    assert centre_out_spokes(spokes) and not centre_out_spokes(radial_trajectory(101, 32))
    # the ramp's first sample stands for the centre's disc from up to 3/4 step out: a few %
    assert abs(gridding_gain(radial_density(spokes, (h, w)), spokes, (h, w)) - 1) < 0.1
