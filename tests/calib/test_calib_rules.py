"""Calibration rules at their bounds: the ESPIRiT crop's minimum gap, unit columns of vectors
whose squares are subnormal, the non-Cartesian calibration disc's size and taper."""

import math

import torch

from mrirecon.calib._linalg import _column_norms, _unit_columns
from mrirecon.calib.centre import EIGENVALUE_ULPS, GAP_PRECISIONS, safe_crop
from mrirecon.calib.noncartesian import gridded_calibration_images


def test_safe_crop_never_ends_a_cut_inside_a_gap_rounding_can_close():
    """The only
    boundary whose cut fits the share lies between two eigenvalues 2e-6 apart at 0.5, narrower
    than GAP_PRECISIONS precisions (3.8e-6 in float32), so no lowered crop fits: 0 (no crop),
    as the docstring says, not a threshold that splits the near-tie."""
    eig = torch.tensor([[[0.5, 0.5 + 2e-6, 0.7, 0.97]]], dtype=torch.float32)
    precision = EIGENVALUE_ULPS * torch.finfo(torch.float32).eps
    assert float(eig[0, 0, 1] - eig[0, 0, 0]) < GAP_PRECISIONS * precision * float(eig[0, 0, 1])
    energy = torch.tensor([[[1.0, 1.0, 1.0, 97.0]]])
    # the crop as given cuts 3 % > 1.5 %; the cut through the near-tie would hold 1 %, the next 2 %
    assert safe_crop(eig, energy, 0.95, 0.015).tolist() == [0.0]
    # with a gap the rounding cannot close at the same place the cut does end there
    eig[0, 0, 1] = 0.6
    got = float(safe_crop(eig, energy, 0.95, 0.015)[0])
    assert 0.5 + 3 / 8 * 0.1 <= got <= 0.6 - 3 / 8 * 0.1


def test_unit_columns_of_vectors_whose_squares_are_subnormal():
    """A 128-coil float32 vector of
    entries 1e-20 has norm 1.1e-19 (above sqrt(tiny) = 1.08e-19) but entries whose squares
    (1e-40) are subnormal (spacing 1.4e-45), so a direct sum of squares loses ~7e-6 relative; the norm must still be exact to
    a few eps, and the unit vector of unit norm."""
    x = torch.full((1, 128, 1), 1e-20, dtype=torch.float32)
    eps = torch.finfo(torch.float32).eps
    exact = float(torch.tensor(1e-20, dtype=torch.float32)) * 128 ** 0.5
    got = float(_column_norms(x)[0, 0, 0])
    assert abs(got - exact) <= 4 * eps * exact
    u = _unit_columns(x)
    assert abs(float(torch.linalg.vector_norm(u.double())) - 1) <= 4 * eps


def _weight_of(sample, shape, calib_width):
    """Weight the calibration gridding gives one sample at ``sample`` = (cycles/FOV along H,
    along W): |image| of that sample alone (value 1, density weight 1) over |image| of a
    sample at DC; a lone sample grids to a plane wave of constant modulus."""
    h, w = shape
    traj = torch.tensor([[0.0, 0.0], [sample[0] / h, sample[1] / w]], dtype=torch.float64)
    ones = torch.ones(2, dtype=torch.float64)
    dc = gridded_calibration_images(torch.tensor([[1, 0]], dtype=torch.complex128), traj, shape,
                                    calib_width, ones).abs()
    s = gridded_calibration_images(torch.tensor([[0, 1]], dtype=torch.complex128), traj, shape,
                                   calib_width, ones).abs()
    return float(s.mean() / dc.mean()), float((s.max() - s.min()) / dc.mean())


def test_calibration_disc_is_a_hann_taper_of_diameter_calib_width_in_cycles_per_fov():
    """On a 32 x 64 grid with calib_width 24 a sample at radius rho cycles/FOV, along
    either axis, is weighted 0.5 + 0.5 cos(pi rho / 12) inside the disc and 0 outside
    (module docstring). Tolerance: the NUFFT's default accuracy (1e-6 relative) with margin."""
    shape, cw = (32, 64), 24
    for sample in [(3, 0), (0, 3), (8, 0), (0, 8), (6, 6), (0, 11.5), (0, 13), (0, 16), (14, 0)]:
        rho = math.hypot(*sample)
        expected = 0.5 + 0.5 * math.cos(math.pi * rho / (cw / 2)) if rho < cw / 2 else 0.0
        got, spread = _weight_of(sample, shape, cw)
        assert abs(got - expected) <= 1e-4, (sample, got, expected)
        assert spread <= 1e-4  # a plane wave: constant modulus
