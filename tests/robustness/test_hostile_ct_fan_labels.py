"""Fan-beam data a user brings, labelled the way other software or a scanner writes them.

* Mirrored fan angles (a clockwise rotation written as counter-clockwise angles, or the detector
  channels numbered the other way): 16.5 / 14.3 dB against 33.3, no word (the conjugate-ray
  check tried positive scales of the fan angles only; the best, 1.435x, stayed below 1.5).
* A curved detector's pitch given as an angle per channel, as scanners quote it (0.0677°):
  7.1 dB and -527 HU silent (degrees), or -1.9 dB blamed on mu_max (radians).
* ASTRA's ``origin_det`` (isocentre to detector) given as ``source_detector``: 12.3 dB, blamed
  on distances in pixels.
* Curved data labelled flat (or flat labelled curved) at a clinical fan angle: 32.6 -> 20.3 dB;
  named noise-free and at 4096 photons per bin (a matched filter sets the photon noise aside).
  Was: noise-free only, at 4096 photons the pairs' energy ratio could not tell (1.04-1.07x)
  and nothing was said.
* A correct short scan of 180° plus the detector's fan was told it needs 180° plus the
  image's (wider) fan: "rays are missing".
* A detector pitch or source-detector distance a few percent off (128² phantom, SID 400 / SDD
  800, 360 views): 6.6 dB lost at 2 %, 11.7 dB at 5 %, 15 dB at 10 %, no word noise-free or at
  4096 photons (14 % named noise-free only). Now the scale of ``u / SDD`` is estimated and the
  pitch and distance that fit are named.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from mrirecon.data.simulate_ct import simulate_ct_samples
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.ct_fan_check import conjugate_mismatch
from mrirecon.pipeline.ct_plausibility import coverage_warning
from mrirecon.pipeline.stages_ct import data_warnings

NEGATE = "negate the angles in attrs/geometry"


def _geometry(detector: str = "flat", sid: float = 400.0, sdd: float = 800.0,
              views: int = 360) -> CTGeometry:
    """64² image of 4 mm pixels (its circle subtends 2 asin(181 / 400) = 54° at SID 400: a
    clinical fan of +-27°), a full turn."""
    g = CTGeometry.fan((64, 64), 8, None, source_isocenter=sid, source_detector=sdd,
                       detector=detector, pixel_size=4.0)
    return replace(g, angles=tuple(np.arange(views) * 2 * math.pi / views))


def _sino(g: CTGeometry, photons: float | None = None, seed: int = 3,
          sources: str = "phantom") -> torch.Tensor:
    sim = simulate_ct_samples(1, g, photons=photons, sources=sources, seed=seed)
    return torch.from_numpy(sim.sinogram[0]).float()


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("photons", [None, 4096.0])
def test_mirrored_fan_angles_warn_naming_the_fix(detector, photons):
    """Channels numbered the other way (the sinogram's detector axis flipped) and a clockwise
    rotation written counter-clockwise (view ``k`` holds the one at ``-angle_k``) make conjugate
    pairs agree with the fan angles mirrored (scale -1): named, with the remedy."""
    g = _geometry(detector)
    y = _sino(g, photons)
    assert "inconsistent" not in data_warnings(y, g)
    views = g.num_views
    clockwise = y[np.mod(-np.arange(views), views)]
    for wrong in (y.flip(-1), clockwise):
        msg = data_warnings(wrong, g).get("inconsistent")
        assert msg is not None and NEGATE in msg and "clockwise" in msg, msg
        assert "scaled by" not in msg  # not a positive scale of the fan angles


@pytest.mark.parametrize("unit, factor", [("degrees", math.pi / 180), ("radians", 1.0)])
def test_a_curved_pitch_given_as_an_angle_warns_naming_it(unit, factor):
    """A curved detector whose ``detector_spacing`` holds the pitch as an angle per channel
    (degrees or radians) instead of the arc length in mm: its bins' fan angles are ``SDD pi /
    180`` (or ``SDD``) times those the geometry reads; named with the right spacing."""
    g = _geometry("curved")
    y = _sino(g, 4096.0)
    pitch = g.detector_spacing / g.source_detector / factor  # the angle per channel
    wrong = replace(g, detector_spacing=pitch)
    msg = data_warnings(y, wrong).get("inconsistent")
    assert msg is not None and f"given in {unit} per channel" in msg, msg
    assert f"detector_spacing = {g.detector_spacing:.4g} mm" in msg


def test_astra_origin_det_as_source_detector_warns_naming_it():
    """ASTRA's ``fanflat`` takes ``source_origin`` and ``origin_det``; stating ``origin_det``
    as ``source_detector`` scales the fan angles by ``SDD / (SID + SDD)`` (0.75 here), which
    was named as distances in pixels (x 1 / pixel_size)."""
    true = _geometry("flat", sid=250.0, sdd=1000.0)
    y = _sino(true, 4096.0)
    msg = data_warnings(y, replace(true, source_detector=750.0)).get("inconsistent")
    assert msg is not None and "ASTRA's origin_det" in msg, msg
    assert "source_detector = source_isocenter + origin_det = 1000 mm" in msg
    assert "in pixels" not in msg


@pytest.mark.parametrize("true, label", [("curved", "flat"), ("flat", "curved")])
def test_the_other_detector_shape_is_named_on_noisy_data(true, label):
    """Data of one detector shape labelled the other at a clinical fan angle (+-27°): named
    noise-free and at 4096 photons per bin (CT images, three noise seeds), where the energy of
    the pairs' differences is photon noise and fits the other shape only 1.04-1.07x better;
    the matched filter (``ct_fan_check._beyond_noise``) sets the noise aside (1.95-6.9x here).
    Was: named noise-free only."""
    g = _geometry(true)
    wrong = replace(g, detector=label)
    for y in [_sino(g)] + [_sino(g, 4096.0, seed, "dicom") for seed in range(3)]:
        msg = data_warnings(y, wrong).get("inconsistent")
        assert msg is not None and f'set detector="{true}"' in msg, msg
        assert "inconsistent" not in data_warnings(y, g)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_correct_noisy_fan_data_stay_silent(detector):
    """Correct fan data at 4096 and 500 photons per bin, several noise seeds: none of the named
    mislabellings (mirrored, pitch as an angle, origin_det, the other shape) fits 1.5x better
    than as labelled, and nothing is said."""
    g = _geometry(detector)
    for photons in (4096.0, 500.0):
        for seed in range(3):
            y = _sino(g, photons, seed)
            fit = conjugate_mismatch(y, g)
            assert all(r < 1.5 for r, _ in fit.causes), fit.causes
            assert data_warnings(y, g) == {}, (photons, seed)


def test_a_short_scan_of_180_degrees_plus_the_detector_fan_is_enough():
    """The detector's fan (2 atan(96 / 500) = 21.7°) is narrower than the image's circle
    (35.1°): no scan measures rays beyond the detector, and 180° plus its fan gives the
    full-scan image (it was told it needs 215°). A geometry whose detector covers the image
    still needs 180° plus the image's fan: 200° of it warns."""
    narrow = CTGeometry("fan", (64, 64), (0.0,), 96, pixel_size=2.0, detector_spacing=2.0,
                        source_isocenter=300.0, source_detector=500.0)
    fan = 2 * float(np.abs(narrow.fan_angles).max())
    step = math.radians(0.5)
    exact = np.arange(int(math.ceil((math.pi + fan) / step)) + 1) * step
    assert coverage_warning(replace(narrow, angles=tuple(exact))) is None
    assert coverage_warning(replace(narrow, angles=tuple(exact[:-8]))) is not None  # 4° short
    wide = replace(narrow, num_detectors=200)  # 2 atan(200 / 500) = 43.6° > the image's 35.1°
    msg = coverage_warning(replace(wide, angles=tuple(np.arange(400) * step)))  # 200°
    assert msg is not None and "35° fan angle the image subtends (215°)" in msg, msg


def _stretch_numbers(msg: str) -> tuple[float, float, float, float]:
    """``(s, se, detector_spacing, source_detector)`` as a small-scale warning states them."""
    s, se = (float(v) for v in re.search(r"scaled by (\d+\.\d+) ± (\d+\.\d+)", msg).groups())
    ds = float(re.search(r"detector_spacing = (\d+\.?\d*) mm", msg).group(1))
    sdd = float(re.search(r"source_detector = (\d+\.?\d*) mm would fit", msg).group(1))
    return s, se, ds, sdd


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("k", [0.9, 0.95, 0.98, 1.02, 1.05, 1.1])
def test_the_fan_angle_scale_is_recovered_on_noise_free_data(detector, k):
    """A pitch ``k`` times the true one (or a source-detector distance ``1 / k`` times) scales
    ``u / SDD`` by ``1 / k`` on either detector shape: the conjugate pairs' estimate
    (``ct_fan_check._stretch``, re-evaluated once at its own estimate) recovers it to 0.1 %."""
    g = _geometry(detector, views=360)
    y = _sino(g)
    for wrong in (replace(g, detector_spacing=g.detector_spacing * k),
                  replace(g, source_detector=g.source_detector / k)):
        fit = conjugate_mismatch(y, wrong)
        assert fit.stretch == pytest.approx(1 / k, abs=1e-3), (k, fit.stretch)
    assert conjugate_mismatch(y, g).stretch == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("what, k", [("pitch", 1.03), ("pitch", 0.95), ("sdd", 0.97),
                                     ("sdd", 1.05)])
def test_a_few_percent_pitch_or_sdd_error_is_named_with_the_value_that_fits(detector, what, k):
    """A detector pitch or source-detector distance 3 % or 5 % off (another scanner model's data
    sheet, a rounded pitch) cost 6-12 dB without a word: the fan-angle scale lies inside
    ``FAN_SCALE_NEAR`` and photon noise hides it from the pairs' energy. Named at 4096 photons
    per bin (CT images, three seeds) with the stated scale within 4 of its standard errors of the
    truth, and the pitch and distance that fit within 1 % of the true ones."""
    g = _geometry(detector)
    wrong = (replace(g, detector_spacing=g.detector_spacing * k) if what == "pitch"
             else replace(g, source_detector=g.source_detector * k))
    true = 1 / k if what == "pitch" else k  # the scale of u / SDD the data have
    for seed in range(3):
        y = _sino(g, 4096.0, seed, "dicom")
        msg = data_warnings(y, wrong).get("inconsistent")
        assert msg is not None and "u / SDD" in msg, msg
        s, se, ds, sdd = _stretch_numbers(msg)
        assert abs(s - true) < 4 * se + 5e-4, (s, se, k)
        off = float(re.search(r"source_detector \([\d.]+ mm\) ([\d.]+)% off\?", msg).group(1))
        assert off == pytest.approx(100 * abs(s - 1), abs=0.06)
        assert ds == pytest.approx(wrong.detector_spacing * s, rel=3e-4)  # s rounded to 4 places
        assert sdd == pytest.approx(wrong.source_detector / s, rel=3e-4)
        if what == "pitch":  # the setting that is off is named with its true value
            assert ds == pytest.approx(g.detector_spacing, rel=0.01)
        else:
            assert sdd == pytest.approx(g.source_detector, rel=0.01)
        assert "source_isocenter" not in msg  # it does not move the fan angles


@pytest.mark.parametrize("scan", ["short", "half-fan"])
def test_correct_short_scans_and_offset_detectors_stay_silent(scan):
    """A correct 250° short scan through 0 / 2π and a full turn on a half-fan (offset)
    detector, noise-free and at 4096 / 500 photons: the fan-angle scale reads 1 within its
    errors and nothing is said."""
    g = _geometry("curved")
    if scan == "short":
        step = math.radians(1.0)
        g = replace(g, angles=tuple(np.mod(-math.radians(50) + np.arange(251) * step,
                                           2 * math.pi)))
    else:
        n = g.num_detectors
        first = n // 2 - n // 8
        centre = first + (n - first - 1) / 2 - (n - 1) / 2
        g = replace(g, num_detectors=n - first, detector_offset=-centre * g.detector_spacing)
    for photons, seed in [(None, 0), (4096.0, 0), (4096.0, 1), (500.0, 2)]:
        y = _sino(g, photons, seed)
        fit = conjugate_mismatch(y, g)
        assert abs(fit.stretch - 1) < max(4 * fit.stretch_se, 2e-3), (photons, fit.stretch)
        assert "inconsistent" not in data_warnings(y, g), (photons, seed)


def test_a_14_percent_error_reads_as_one_precise_message():
    """A pitch 14 % off: the coarse scales (9 % apart, none within ``FAN_SCALE_NEAR``) would
    read 1.19; the small-scale estimate names the value that fits (one message, not two)."""
    g = _geometry("flat")
    y = _sino(g)
    msg = data_warnings(y, replace(g, detector_spacing=g.detector_spacing / 1.14))["inconsistent"]
    s, _, ds, _ = _stretch_numbers(msg)
    assert s == pytest.approx(1.14, abs=2e-3) and ds == pytest.approx(g.detector_spacing, rel=2e-3)
    assert "better scaled by" not in msg and msg.count("fan angles of the detector bins") == 1
