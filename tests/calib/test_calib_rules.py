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


def test_the_centred_width_is_the_block_espirit_calibrates_on():
    from mrirecon.calib import centred_width

    cols = torch.zeros(128, dtype=torch.bool)
    cols[::4] = True
    cols[62:90] = True  # a one-sided ACS run about DC 64, and R = 4 lattice columns
    assert centred_width(cols) == 5  # 62..66: 64 - 5 // 2 on
    sym = torch.zeros(128, dtype=torch.bool)
    sym[52:76] = True
    assert centred_width(sym) == 24
    lattice = torch.zeros(128, dtype=torch.bool)
    lattice[1::4] = True  # 49, 53, ..., 77: none touches the band's edges
    assert centred_width(sym | lattice) == 24  # lattice columns inside the window add nothing
    assert centred_width(torch.ones(7, dtype=torch.bool)) == 7
    sym[64] = False
    assert centred_width(sym) == 0  # no data at DC


def test_a_one_sided_acs_calibrates_on_its_centred_block_instead_of_failing():
    """28 contiguous ACS columns 62-89 (DC at 64) with R = 4 lattice columns: the kernel was
    clamped to the 28 (+2 lattice) columns, and ESPIRiT, calibrating on the 5 centred ones,
    refused it ("kernel_width (6, 6) takes fewer than 3 positions"), failing the slice in
    ``mrirecon run``; a 5-column symmetric band on the same data ran."""
    from mrirecon.calib import centre_maps, centre_window
    from mrirecon.data.simulate_mri import simulate_mri_volume

    vol = simulate_mri_volume(0, slices=1, coils=8, size=(64, 128), seed=1)
    k = vol.kspace[0].to(torch.complex64)
    cols = torch.zeros(128, dtype=torch.bool)
    cols[::4] = True
    cols[62:90] = True
    window = centre_window(cols, 24)
    centre_maps(k * cols, window)  # raised ValueError
    band = torch.zeros(128, dtype=torch.bool)
    band[62:67] = True
    # the same 5-column block and kernel (the crop safeguard, off here, sees the window's energy)
    one_sided = centre_maps(k * cols, window, max_cropped_energy=None)
    symmetric = centre_maps(k * cols, band, max_cropped_energy=None)
    torch.testing.assert_close(one_sided, symmetric, rtol=0, atol=0)
