"""The MRI pipeline's per-slice rules at their bounds (``pipeline/checks_mri``, ``slice_snr``,
``reference_mri``, ``reference_checks``, ``sampling_mri``): the central spike window, dead coils in
the cross-coil median, the coil-last rule, when DC offsets are subtracted and where, the SNR of
undersampled and readout-cropped slices, the calibration band, coil compression of a separate
reference, the GRAPPA kernel width, the partial-Fourier band and threshold."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mrirecon.functional import fft2c
from mrirecon.functional.fft import crop_readout
from mrirecon.pipeline.checks_mri import (CENTRE_SPIKE_RATIO, SPIKE_RATIO,
                                          check_kspace, cross_coil_ratio,
                                          refuse_coils_last, remove_dc_offsets,
                                          removable_dc_offsets)
from mrirecon.pipeline.checks_noncart import NOISE_BAND, NOISE_DIFFERENCE_ORDER
from mrirecon.pipeline.reference_checks import scale_note
from mrirecon.pipeline.reference_mri import calibration_band, compress_coils
from mrirecon.pipeline.sampling_mri import (_nearest_sampled_inward, grappa_kernel,
                                            partial_fourier_band)
from mrirecon.pipeline.slice_snr import kspace_snr_db

#: as tests/pipeline/test_model_range_snr_acs.py: relative std of a noise power from the median
#: of n exponential values (1 / ln 2), times 1.62 for the overlapping 4th differences
MEDIAN_SD = 1.62 / math.log(2)


def _cnoise(shape, gen, std=1.0):
    """Complex Gaussian noise, ``std`` per component, float64."""
    return std * torch.complex(torch.randn(shape, generator=gen, dtype=torch.float64),
                               torch.randn(shape, generator=gen, dtype=torch.float64))


# ---- beside tests/pipeline/test_scanner_faults_mri.py


def test_the_central_window_is_symmetric_about_dc():
    """A real object's k-space is Hermitian, |k(-r)| = |k(r)| about DC (H // 2, W // 2):
    a stripe across the readout puts a peak 2 rows on each side of DC, both inside the central
    5 x 5, where only CENTRE_SPIKE_RATIO above the readout neighbours makes a spike. Neither is
    one; a window one row short on the + side called the +2 peak a spike."""
    gen = torch.Generator().manual_seed(0)
    h = w = 32
    y = torch.arange(h, dtype=torch.float64)[:, None]
    image = (1 + 1.2 * torch.cos(2 * math.pi * 2 * y / h)).expand(h, w)  # real, fills the FOV
    k = fft2c(image.to(torch.complex128))[None] + _cnoise((1, h, w), gen, 0.01)
    mag = k.abs()[0]
    for r in (h // 2 - 2, h // 2 + 2):  # both peaks are in the band the two rules differ on
        ratio = float(mag[r, w // 2] / torch.maximum(mag[r - 1, w // 2], mag[r + 1, w // 2]))
        assert SPIKE_RATIO < ratio < CENTRE_SPIKE_RATIO, (r, ratio)
    check_kspace(k, "stripes")  # no spike
    check_kspace(k.conj().flip(-2, -1).roll((1, 1), (-2, -1)), "stripes mirrored")


def test_cross_coil_ratio_leaves_a_dead_coil_out_of_the_median():
    """A dead (all-zero) coil has no scale and stays out of the median over the coils
    (cross_coil_ratio's docstring): appending one leaves the live coils' ratios as they were,
    and its own are 0. In the median it lowered every position's median to the smallest live
    coil's (3 live coils), turning ordinary centre samples into 'spikes'."""
    gen = torch.Generator().manual_seed(1)
    live = torch.rand(3, 5, 5, generator=gen, dtype=torch.float64) + 0.1
    r3 = cross_coil_ratio(live)
    r4 = cross_coil_ratio(torch.cat([live, torch.zeros(1, 5, 5, dtype=torch.float64)]))
    torch.testing.assert_close(r4[:3], r3, rtol=1e-12, atol=0.0)
    assert bool((r4[3] == 0).all())


def test_coils_last_needs_the_energy_to_fall_off_on_both_sides_of_the_middle_coil():
    """A k-space axis falls off on both sides of DC; two loud neighbouring channels
    (adjacent elements near the object) fall off on one side only and are not a coil-last
    array. With both neighbours high it is refused."""
    rows = torch.ones(64, dtype=torch.float64)
    rows[32] = 100.0  # a k-space centre along the rows
    cols = torch.ones(64, dtype=torch.float64)  # none along the 'columns' (the coils' H)
    energy = torch.ones(16, dtype=torch.float64)
    energy[8], energy[9] = 50.0, 30.0  # coil 7 at the median
    refuse_coils_last(energy, cols, "two loud channels", rows)  # not refused
    energy[7] = 30.0
    with pytest.raises(ValueError, match="the coil axis holds the k-space centre"):
        refuse_coils_last(energy, cols, "a centred k-space axis", rows)


def test_dc_offsets_are_subtracted_only_when_fewer_than_half_the_coils_hold_one():
    """'subtracted only when fewer than half of the coils hold one': 1 of 4 is, 2 of 4
    (exactly half: as likely an object at the centre of the FOV) and 3 of 4 are only named."""
    gen = torch.Generator().manual_seed(2)
    noise = _cnoise((4, 64, 32), gen).to(torch.complex64)
    for held, subtract in ((1, True), (2, False), (3, False)):
        k = noise.clone()
        k[:held] += 5.0  # 5 noise stds: far above DC_OFFSET_Z standard errors and DC_OFFSET_NOISE
        offsets, _, sub = removable_dc_offsets(k)
        assert int((offsets != 0).sum()) == held and sub is subtract, (held, offsets, sub)


def test_dc_offset_removal_leaves_unsampled_samples_zero():
    """The offset is subtracted from the coil's non-zero samples only: unsampled columns
    stay exactly zero (else every unsampled column holds -offset, 'measured' by the operator)."""
    gen = torch.Generator().manual_seed(3)
    k = _cnoise((4, 64, 32), gen).to(torch.complex64)
    k[0] += 5.0
    k[:, :, 1::2] = 0  # 2x undersampled
    offsets, _, subtract = removable_dc_offsets(k)
    assert subtract and int((offsets != 0).sum()) == 1
    out = remove_dc_offsets(k)
    assert bool((out[:, :, 1::2] == 0).all())
    torch.testing.assert_close(out[:, :, ::2], k[:, :, ::2] - offsets.to(k.dtype)[:, None, None])


# ---- beside tests/pipeline/test_model_range_snr_acs.py


def _slice(kspace, mask=None, acquired_rows=None):
    w = kspace.shape[-1]
    mask = torch.ones(w, dtype=torch.bool) if mask is None else mask
    header = SimpleNamespace(acquired_columns=lambda n: torch.ones(n, dtype=torch.bool), extra={})
    return SimpleNamespace(kspace=kspace * mask, mask=mask, header=header, noise=None,
                           acquired_rows=acquired_rows, trajectory=None)


def _sd_db(coils, rows, cols):
    """The std (dB) of the outer-rows noise power estimate: as the existing test's bound."""
    b = math.ceil(rows * NOISE_BAND)
    corners = coils * 4 * (cols // 4) * (b - NOISE_DIFFERENCE_ORDER)
    return 4.34 * MEDIAN_SD / math.sqrt(corners)


def test_snr_of_an_undersampled_slice_counts_outer_columns_for_those_they_stand_for():
    """An object whose k-space energy is spread over all columns (narrow along the
    readout, so the outer readout rows hold noise alone): undersampled 4x with a 20-column
    band, the estimate is the SNR the noise was drawn for, as fully sampled. Without the
    acquirable / sampled weight of the outer columns it fell by ~10 log10(128 / 47) = 4.4 dB."""
    gen = torch.Generator().manual_seed(5)
    coils, n, snr_db = 16, 128, 20.0
    y = (torch.arange(n, dtype=torch.float64) - n // 2)[:, None]
    phase = torch.exp(1j * 6.28 * torch.rand(coils, 1, n, generator=gen, dtype=torch.float64))
    clean = torch.exp(-y ** 2 / (2 * 6.0 ** 2))[None] * phase  # (coils, n, n), flat over columns
    var = float(clean.abs().square().mean()) / 10 ** (snr_db / 10)
    data = clean + _cnoise(clean.shape, gen, math.sqrt(var / 2))
    config = SimpleNamespace(preprocess=SimpleNamespace(prewhiten=False))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::4] = True
    mask[n // 2 - 10:n // 2 + 10] = True
    full = kspace_snr_db(config, _slice(data))
    under = kspace_snr_db(config, _slice(data, mask))
    assert abs(full[0] - snr_db) < 5 * _sd_db(coils, n, n), full
    assert abs(under[0] - snr_db) < 5 * _sd_db(coils, n, n // 4), under


def test_snr_after_a_readout_crop_is_the_snr_as_acquired():
    """Readout oversampling removed (crop_readout, as preprocess does; acquired_rows the
    rows as acquired): the estimate is that of the data as acquired. The crop keeps the
    object's energy on half the rows and the noise per sample, so counting the cropped rows
    read 10 log10(2) = 3 dB too high."""
    gen = torch.Generator().manual_seed(6)
    coils, h, w = 8, 256, 128
    y = (torch.arange(h, dtype=torch.float64) - h // 2)[:, None]
    x = (torch.arange(w, dtype=torch.float64) - w // 2)[None]
    blob = torch.exp(-(x ** 2 + y ** 2) / (2 * 6.0 ** 2))  # image well inside the central half
    phase = torch.exp(1j * 6.28 * torch.rand(coils, 1, 1, generator=gen, dtype=torch.float64))
    clean = blob[None] * phase
    var = float(clean.abs().square().mean()) / 10 ** (15.0 / 10)
    acquired = clean + _cnoise(clean.shape, gen, math.sqrt(var / 2))
    config = SimpleNamespace(preprocess=SimpleNamespace(prewhiten=False))
    as_acquired = kspace_snr_db(config, _slice(acquired))
    cropped = kspace_snr_db(config, _slice(crop_readout(acquired, h // 2), acquired_rows=h))
    bound = 5 * math.hypot(_sd_db(coils, h, w), _sd_db(coils, h // 2, w))
    assert abs(cropped[0] - as_acquired[0]) < bound, (as_acquired, cropped, bound)


# ---- beside tests/robustness/test_hostile_coil_calibration.py


def test_calibration_band_takes_the_columns_asked_for():
    """An int reconstruct.params.calib is that many of the reference's columns
    (grappa_params): calibration_band(s, 4) is 4 contiguous columns of the reference's 10-column
    band, not all 10."""
    gen = torch.Generator().manual_seed(7)
    cal = torch.zeros(4, 32, 64, dtype=torch.complex64)
    cal[:, :, 27:37] = _cnoise((4, 32, 10), gen).to(torch.complex64)
    s = SimpleNamespace(calibration=cal, mask=torch.zeros(64, dtype=torch.bool), file_name="f",
                        index=0)
    assert calibration_band(s).shape == (4, 32, 10)
    band = calibration_band(s, 4)
    assert band.shape == (4, 32, 4)
    starts = [j for j in range(27, 34) if torch.equal(cal[:, :, j:j + 4], band)]
    assert len(starts) == 1, "not 4 contiguous columns of the reference's band"


@pytest.mark.parametrize("method", ["svd", "gcc"])
def test_the_reference_is_compressed_with_the_imaging_datas_matrix(method):
    """compress_coils gives the separate reference the imaging data's matrix: a reference
    equal to the imaging k-space comes out equal to the compressed imaging k-space (a conjugated
    SVD matrix mixed the reference's coils into other virtual coils than the data's)."""
    gen = torch.Generator().manual_seed(8)
    k = _cnoise((8, 32, 40), gen).to(torch.complex64)
    out, ref = compress_coils(k, k.clone(), 4, method)
    tol = 1e2 * torch.finfo(torch.float32).eps * float(k.abs().max()) * math.sqrt(k.shape[0])
    torch.testing.assert_close(ref, out, rtol=0.0, atol=tol)


# ---- beside tests/robustness/test_hostile_shared_rules.py


def test_scale_note_gives_the_references_scale_over_the_reconstructions():
    """'the reference's scale is Rx the reconstruction's': R = ||reference|| / ||output||
    (a reference 100x the output says 100x, not 0.01x)."""
    out = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert scale_note(100 * out, out).startswith("the reference's scale is 100x")
    assert scale_note(out / 100, out).startswith("the reference's scale is 0.01x")


# ---- beside tests/robustness/test_hostile_adapt_pf.py


def test_partial_fourier_band_is_the_symmetric_part_about_the_centre():
    """The band that gives phase-constrained CG-SENSE its phase is symmetric about the
    centre column W // 2: 2 min(before, after) + 1 columns, mirrored pairs alike."""
    w = 64
    header = SimpleNamespace(extra={"encoding_limits_step_1": [0, 43, 32]},
                             encoded_matrix=(64, w, 1))  # 32 before, 11 after the centre
    band = partial_fourier_band(header, w)
    assert int(band.sum()) == 2 * 11 + 1
    d = torch.arange(1, w // 2)
    assert torch.equal(band[w // 2 + d], band[w // 2 - d]) and bool(band[w // 2])


# ---- beside tests/pipeline/test_mri_data_checks.py


def test_grappa_kernel_is_the_widest_odd_width_the_band_holds():
    """grappa_kernel's rule: ky 5, or the widest odd width that fits in the band (an
    even ky has no centre column to fill around)."""
    s = SimpleNamespace(file_name="f", index=0)
    for acs in range(3, 14):
        ky = grappa_kernel(s, acs)[1]
        assert ky % 2 == 1 and ky == min(5, acs if acs % 2 else acs - 1), (acs, ky)


# ---- beside tests/pipeline/test_unsupported_energy.py


def test_nearest_sampled_inward_includes_the_centre_column_on_both_sides():
    """For each column, the nearest sampled column between it and the centre W // 2
    (itself included), -1 where none: brute force over random masks. Without the centre on the
    left walk, columns left of a lone centre column were never judged."""
    gen = torch.Generator().manual_seed(10)
    for w in (16, 17):
        for _ in range(50):
            m = torch.rand(w, generator=gen) < 0.3
            want = []
            for j in range(w):
                between = range(j, w // 2 - 1, -1) if j >= w // 2 else range(j, w // 2 + 1)
                want.append(next((i for i in between if m[i]), -1))
            assert _nearest_sampled_inward(m).tolist() == want, (m.int().tolist())


def test_partial_fourier_starts_below_the_symmetry_fraction():
    """'lines on the short side below PARTIAL_FOURIER_SYMMETRY of the long side's make a
    partial Fourier acquisition': exactly at it (17 of 20) is symmetric, one line fewer is not."""
    from mrirecon.pipeline.sampling_mri import PARTIAL_FOURIER_SYMMETRY, partial_fourier_note

    assert 17 == PARTIAL_FOURIER_SYMMETRY * 20  # exact in binary floating point
    for after, partial in ((17, False), (16, True)):
        header = SimpleNamespace(extra={"encoding_limits_step_1": [12, 32 + after, 32]},
                                 encoded_matrix=(64, 64, 1))  # 20 before the centre
        assert (partial_fourier_note(header) is not None) is partial, after
