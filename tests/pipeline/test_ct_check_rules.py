"""The CT pipeline's input checks at their bounds (``pipeline/ct_consistency``, ``ct_fan_check``,
``ct_plausibility``): the rotation-centre fit (clipped projections, an object at one detector end),
dead views and elements, pre-log against post-log data, half-turn coverage from any start angle,
the noise and bulk-attenuation fits, conjugate pairs of fan scans and the fix a fan-label warning
suggests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrirecon.operators.ct_geometry import CTGeometry


def _disc_sino(views: int, n: int, radius: float, centre: float = 0.0, value: float = 1.0,
               angles: np.ndarray | None = None) -> torch.Tensor:
    """Exact parallel-beam line integrals (bins of unit width) of a uniform disc of ``radius``
    bins centred ``centre`` bins right of the axis: chords ``2 sqrt(R^2 - (u - c cos t)^2)``."""
    t = np.linspace(0, np.pi, views, endpoint=False) if angles is None else angles
    u = np.arange(n) - (n - 1) / 2
    d = u[None, :] - centre * np.cos(t)[:, None]
    return torch.from_numpy(value * 2 * np.sqrt(np.clip(radius**2 - d**2, 0, None)))



def _half_turn(views: int, n: int) -> CTGeometry:
    """Parallel beam over [0, pi), ``n`` unit bins and an ``n`` x ``n`` image of unit pixels."""
    return CTGeometry(angles=tuple(np.linspace(0, np.pi, views, endpoint=False)), num_detectors=n,
                      detector_spacing=1.0, pixel_size=1.0, image_shape=(n, n), beam="parallel")

# beside tests/pipeline/test_ct_centre_offset.py
def test_centre_fit_refuses_clipped_projections():
    """More than CENTRE_MAX_CLIPPED of the bins at the sinogram's maximum (rays floored at the
    count floor) bias the centres of mass: the fit must not be made (None), whatever it reads."""
    from mrirecon.pipeline.ct_consistency import CENTRE_MAX_CLIPPED, centre_fit

    n, views = 128, 90
    g = _half_turn(views, n)
    sino = _disc_sino(views, n, 30, centre=10)
    assert centre_fit(sino, g) is not None  # whole projections: measured
    clipped = sino.clamp(max=0.8 * float(sino.max()))  # a starved core, floored
    assert (clipped >= clipped.max()).double().mean() > CENTRE_MAX_CLIPPED
    assert centre_fit(clipped, g) is None


# beside tests/pipeline/test_ct_centre_offset.py
def test_centre_fit_of_an_object_grazing_one_end_of_the_detector():
    """Each view's air level is the lower of its two ends: an object that reaches into one end's
    edge window in some views must not have its own line integrals subtracted as 'air'. Exact
    data of a disc 33 bins right of the axis (radius 30), reaching the last bins: the axis is found at the
    stated 0 to well within CENTRE_TOLERANCE_BINS."""
    from mrirecon.pipeline.ct_consistency import CENTRE_TOLERANCE_BINS, centre_fit

    n, views = 128, 180
    g = _half_turn(views, n)
    sino = _disc_sino(views, n, 30, centre=33) + 0.01  # a little air drift, both ends alike
    k = max(2, round(n / 32))
    assert float(sino[:, -k:].max()) > 0.2 * float(sino.max())  # it grazes the last bins
    c, se = centre_fit(sino, g)
    assert abs(c) < CENTRE_TOLERANCE_BINS / 2, (c, se)


# beside tests/pipeline/test_scanner_faults_ct.py
def test_dead_views_use_the_absolute_line_integral():
    """The rule is on each view's total *absolute* line integral: data with a negative air
    baseline (I0 over-estimated: every line integral shifted down) still have their all-zero
    view found, and no live view whose signed sum happens to be small is dropped."""
    from mrirecon.pipeline.ct_consistency import dead_views

    sino = _disc_sino(60, 96, 20)
    sino = sino - 0.5 * float(sino.mean(-1).mean())  # a negative baseline: sums near zero
    sino[7] = 0.0
    dead = dead_views(sino)
    assert dead.tolist() == [i == 7 for i in range(60)]
    assert dead_views(-sino).tolist() == dead.tolist()  # the sign of the data does not matter


# beside tests/robustness/test_hostile_ct_values.py
def test_post_log_data_truncated_on_one_side_are_not_called_pre_log():
    """Pre-log data read air (their top) at *both* ends. Post-log line integrals of ~1 (LoDoPaB's
    scale) truncated on one side, air (0) on the other, are line integrals, not I / I0."""
    from mrirecon.pipeline.ct_consistency import transmission_warning

    n, views = 128, 60
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    prof = (4 * (u - 0.25)).clamp(0, 1)  # air up to a quarter, a plateau of 1 at the right end
    sino = prof[None].expand(views, -1).clone()
    assert transmission_warning(sino, 4) is None
    # the same plateau at both ends with the object darker (I / I0) is pre-log: still said
    bump = torch.where((u > 0.2) & (u < 0.8), torch.sin(math.pi * (u - 0.2) / 0.6) ** 2, 0.0)
    pre = (1 - 0.7 * bump)[None].expand(views, -1).clone()  # air exactly 1 at both ends
    assert transmission_warning(pre, 4) is not None


# beside tests/pipeline/test_ct_data_warnings.py
def test_dead_bins_need_both_neighbours_inside_the_object():
    """A bin zero in every view is dead only where the *smaller* of its neighbours reads the
    object: the air bin just outside a sharp-edged disc (zero in every view, its inner
    neighbour reading a chord of 2 sqrt(R)) is air, not a dead element."""
    from mrirecon.pipeline.ct_fan_check import dead_bins

    sino = _disc_sino(90, 101, 40.5)  # disc edge between bins: bins 0..9 and 91..100 air
    assert not bool(dead_bins(sino).any())
    broken = sino.clone()
    broken[:, 50] = 0.0
    assert torch.nonzero(dead_bins(broken)).flatten().tolist() == [50]


# beside tests/robustness/test_hostile_ct_values.py
def test_a_dead_element_in_one_slice_of_a_volume_is_named():
    """dead_columns takes each column's worst slice: a dead element in one slice of two."""
    from mrirecon.pipeline.ct_plausibility import dead_columns

    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 129, dtype=torch.float64)
    body = (4.0 * (1 - x**2).clamp_min(0).sqrt())[None].expand(100, -1)
    vol = torch.stack([body + 0.02 * torch.randn(100, 129, generator=g, dtype=torch.float64)
                       for _ in range(2)])
    vol[1, :, 64] = math.log(4096 / 0.1)
    found = dead_columns(vol, 4096, 0.1)
    assert found is not None and found[0] == [64]


# beside tests/robustness/test_hostile_ct_geometry.py
@pytest.mark.parametrize("start_deg", [-90.0, 90.0, 270.0])
def test_a_half_turn_written_from_any_start_angle_covers_every_direction(start_deg):
    """A parallel beam needs a half turn of *directions*: 180 views over [start, start + 180)
    cover them wherever the scan starts (scanners write -90..90); a full turn too."""
    from mrirecon.pipeline.ct_plausibility import coverage_warning

    def geo(a):
        return CTGeometry(angles=tuple(a), num_detectors=64, detector_spacing=1.0,
                          pixel_size=1.0, image_shape=(64, 64), beam="parallel")

    half = np.radians(start_deg) + np.linspace(0, np.pi, 180, endpoint=False)
    assert coverage_warning(geo(half)) is None
    assert coverage_warning(geo(np.linspace(0, 2 * np.pi, 360, endpoint=False))) is None
    assert coverage_warning(geo(half[:90])) is not None  # a quarter turn: limited angle


# beside tests/robustness/test_hostile_pipeline_matrix.py
def test_bulk_shift_bound_is_half_the_white_noise_sigma():
    """bulk_shift's bound is BULK_SHIFT_FRACTION x the preview's per-pixel noise sigma: on a water
    disc with white Gaussian noise of known sigma it reads that sigma (in HU) to within the
    estimator's sampling error (MAD of ~1.5e4 interior residuals: ~1 % relative; 4 % allowed)."""
    from mrirecon.pipeline.ct_plausibility import (BULK_SHIFT_FRACTION, MU_WATER_NOMINAL,
                                                   bulk_shift)

    n, sigma = 192, 0.1 * MU_WATER_NOMINAL  # 100 HU of noise
    r, c = np.mgrid[:n, :n] - (n - 1) / 2
    disc = torch.from_numpy(np.where(np.hypot(r, c) < 0.4 * n, MU_WATER_NOMINAL, 0.0))
    g = torch.Generator().manual_seed(1)
    preview = disc + sigma * torch.randn(n, n, generator=g, dtype=torch.float64)
    shift, bound = bulk_shift(preview, preview)
    assert shift == 0.0
    assert bound / BULK_SHIFT_FRACTION == pytest.approx(1000 * sigma / MU_WATER_NOMINAL, rel=0.04)


# beside tests/pipeline/test_ct_noise_fit.py
def test_noise_fit_ratio_takes_starved_rays_at_one_count():
    """The expected counts are never below one: rays whose fit A x lies far beyond log(photons)
    (metal: no photon) enter the noise variance at 1 (count), not exp(A x) / photons, which
    would drown the ratio of the other rays (about 1 at the true image) and depend on how far
    beyond the floor the fit reads."""
    from mrirecon.pipeline.ct_plausibility import noise_fit_ratio

    photons = 4096.0
    g = torch.Generator().manual_seed(0)
    ax = torch.rand(200, 256, generator=g, dtype=torch.float64) * 3
    y = ax + torch.randn(200, 256, generator=g, dtype=torch.float64) * (ax.exp() / photons).sqrt()
    assert noise_fit_ratio(y, ax, photons) == pytest.approx(1.0, abs=0.05)
    ratios = []
    for beyond in (20.0, 40.0):  # ~1 % of the rays: a metal shadow far beyond the count floor
        ax2, y2 = ax.clone(), y.clone()
        ax2[:, :2] = beyond
        y2[:, :2] = beyond  # fitted exactly there: only their variance enters
        ratios.append(noise_fit_ratio(y2, ax2, photons))
    # their variance is one count's whatever the fit reads: the ratio cannot depend on it
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-9)
    assert ratios[0] > 0.05  # (~0.13: the clean rays' residual over a variance of which ~85 %
    # is the starved rays' one count; exp(A x) / photons would give ~1e-12)


# beside tests/robustness/test_hostile_ct.py
def test_bulk_attenuation_of_uniform_water_is_water_within_half_a_bin():
    """The mode is reported at the centre of its histogram bin (64 bins over [0.3 p99, q99.9]):
    a uniform water disc reads water to within half a bin width (+ rounding)."""
    from mrirecon.pipeline.ct_plausibility import MU_WATER_NOMINAL, OBJECT_FRACTION, bulk_attenuation

    n = 128
    r, c = np.mgrid[:n, :n] - (n - 1) / 2
    img = torch.from_numpy(np.where(np.hypot(r, c) < 0.4 * n, MU_WATER_NOMINAL, 0.0))
    width = (1 - OBJECT_FRACTION) * MU_WATER_NOMINAL / 64
    assert abs(bulk_attenuation(img) - MU_WATER_NOMINAL) <= 0.5 * width * (1 + 1e-9)


# beside tests/robustness/test_hostile_ct_fan_labels.py
def test_a_fan_scan_too_short_to_measure_rays_twice_is_not_judged():
    """Conjugate rays need 180 deg + the fan (here 27 deg): a 180 deg fan scan measures only
    ~7 % of its rays twice, and conjugate_mismatch must not report a fit from those few."""
    from mrirecon.pipeline.ct_fan_check import FAN_MIN_PAIRS, _Conjugates, conjugate_mismatch

    views, n = 64, 96
    g = CTGeometry(angles=tuple(np.linspace(0, np.pi, views, endpoint=False)),
                   num_detectors=n, detector_spacing=2.0, pixel_size=1.0, image_shape=(64, 64),
                   beam="fan", source_isocenter=200.0, source_detector=400.0)
    from mrirecon.operators import ct_operator
    x = torch.zeros(64, 64, dtype=torch.float64)
    x[16:48, 20:44] = 0.02
    sino = ct_operator(g)(x).reshape(views, n)
    _, ok = _Conjugates(sino.numpy(), g).differences(1.0)
    assert 0 < ok.mean() < FAN_MIN_PAIRS
    assert conjugate_mismatch(sino, g) is None


# beside tests/pipeline/test_ct_checks_scale.py
def test_opposite_pairs_break_exact_ties_as_the_quadratic_reference():
    """Two views equally near angle + pi (178 and 182 deg, the 180 deg view missing: an exact tie
    in float64 via np.radians): the first in view order is the partner, as the O(n^2) scan
    (argmin: the first of equals) picks it."""
    from mrirecon.pipeline.ct_consistency import opposite_pairs
    from tests.pipeline.test_ct_checks_scale import _reference_pairs

    deg = [d for d in range(0, 360, 10) if d != 180] + [182, 178]
    angles = np.radians(np.array(deg, dtype=float))
    i, j = opposite_pairs(angles)
    ri, rj = _reference_pairs(angles)
    assert i.tolist() == ri.tolist() and j.tolist() == rj.tolist()
    assert dict(zip(i.tolist(), j.tolist()))[0] == 35  # 182 deg, stored before 178 deg


# beside tests/robustness/test_hostile_ct_fan_labels.py
def test_a_pitch_error_on_an_offset_detector_names_the_offset_that_keeps_the_axis_bin():
    """A half-fan (offset) detector whose pitch is stated 4 % large, its offset in the same
    (wrong) units: the fix names the pitch that fits *and* detector_offset x s, the axis at the
    same bin; the offset as stated would move the axis by 4 % of its distance."""
    import re
    from dataclasses import replace

    from mrirecon.pipeline.stages_ct import data_warnings
    from tests.robustness.test_hostile_ct_fan_labels import _geometry, _sino

    g = _geometry("curved")
    n = g.num_detectors
    first = n // 2 - n // 8
    centre = first + (n - first - 1) / 2 - (n - 1) / 2
    g = replace(g, num_detectors=n - first, detector_offset=-centre * g.detector_spacing)
    y = _sino(g)
    k = 1.04
    wrong = replace(g, detector_spacing=g.detector_spacing * k, detector_offset=g.detector_offset * k)
    msg = data_warnings(y, wrong).get("inconsistent")
    assert msg is not None and "u / SDD" in msg, msg
    ds = float(re.search(r"detector_spacing = (\d+\.?\d*) mm", msg).group(1))
    off = float(re.search(r"with detector_offset = (-?\d+\.?\d*) mm", msg).group(1))
    assert ds == pytest.approx(g.detector_spacing, rel=0.005)
    assert off == pytest.approx(g.detector_offset, rel=0.005)


# beside tests/robustness/test_hostile_ct_fan_labels.py
@pytest.mark.parametrize("views", [180, 360])
def test_over_a_full_turn_every_ray_has_its_conjugate(views):
    """Over a full turn of evenly spaced views every fan-beam ray is measured twice: with the
    circle closed (the last view one step before 2 pi), every bin of a centred detector has its
    conjugate pair, also those whose conjugate falls between the last view and the first."""
    from mrirecon.pipeline.ct_fan_check import _Conjugates
    from tests.robustness.test_hostile_ct_fan_labels import _geometry, _sino

    g = _geometry("flat", views=views)
    c = _Conjugates(_sino(g).double().numpy(), g)
    assert c.full
    assert c.differences(1.0)[1].all()


# beside tests/robustness/test_hostile_ct_fan_labels.py
def test_two_named_causes_with_nearly_the_same_fan_angles_are_both_named():
    """With 0.502 mm pixels and SID / SDD = 1/2, a pitch given at the isocentre (x 2) and
    distances in pixels (x 1 / (SDD px) = 1 / 401.6 vs 1 / 400) give fan angles 0.4 % apart:
    noise cannot choose between them, and the warning names both (within FAN_CAUSE_NEAR)."""
    from dataclasses import replace

    from mrirecon.pipeline.ct_fan_check import FAN_CAUSE_NEAR, conjugate_mismatch, fan_geometry_warning
    from tests.robustness.test_hostile_ct_fan_labels import _sino

    g = CTGeometry.fan((64, 64), 8, None, source_isocenter=400.0, source_detector=800.0,
                       detector="flat", pixel_size=0.502)
    g = replace(g, angles=tuple(np.arange(360) * 2 * math.pi / 360))
    y = _sino(g)
    wrong = replace(g, detector_spacing=g.detector_spacing * 400 / 800)  # given at the isocentre
    causes = conjugate_mismatch(y, wrong).causes
    assert causes[0][0] > causes[1][0] > causes[0][0] / FAN_CAUSE_NEAR  # distinct, both near
    msg = fan_geometry_warning(y, wrong)
    assert "given at the isocentre" in msg and "in pixels, not mm" in msg, msg
