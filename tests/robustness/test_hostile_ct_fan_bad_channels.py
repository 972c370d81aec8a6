"""Fan-beam data with one bad detector channel, correctly labelled: the conjugate-ray checks
(``ct_fan_check``) must not blame the geometry for it.

* One dead channel (566 or 568 of 736 zeroed) on a clinical curved short scan was told "the
  data's pairs agree 2.22x / 1.58x better taken as data of a flat detector labelled curved ...:
  set detector=\"flat\"", whose advice costs 4 dB (29.01 -> 25.00 dB at 1e5 photons, 2304
  views a turn): the dead channel's pair differences read as signal.
* One hot (miscalibrated) channel, +0.5 or +1.0 post-log on channel 566, was told "u / SDD
  scaled by 1.0052 ± 0.0005 ... Is detector_spacing ... 0.5% off?", whose advice costs 1.7-4
  dB: the matched filter's jackknife grouped ray directions only, and one channel biases every
  direction alike.

The geometry is the clinical one (SID 595 / SDD 1085.6 mm, 736 curved channels of 1.283 mm) on
a 128² image over 500 mm, 576 views a turn (the 2304-view effect reproduces there).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mrirecon.operators import ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.ct_fan_check import conjugate_mismatch
from mrirecon.pipeline.stages_ct import data_warnings

N, PX = 128, 500.0 / 128


def _short_scan(offset_bins: float = 0.0) -> tuple[CTGeometry, torch.Tensor]:
    """A correctly labelled clinical curved short scan (180° plus the fan) of a body-like
    ellipse with a bone and a lung insert, noise-free."""
    g = CTGeometry.fan((N, N), 576, 736, source_isocenter=595.0, source_detector=1085.6,
                       detector="curved", pixel_size=PX, detector_spacing=1.283,
                       detector_offset=offset_bins * 1.283)
    fan = 2 * float(np.abs(g.fan_angles).max())
    step = 2 * math.pi / 576
    g = replace(g, angles=tuple(np.arange(int(math.ceil((math.pi + fan) / step)) + 1) * step))
    y, x = np.mgrid[:N, :N].astype(np.float64)
    x, y = (x - (N - 1) / 2) * PX, ((N - 1) / 2 - y) * PX
    img = 0.0192 * ((x / 170) ** 2 + (y / 120) ** 2 <= 1)
    img += 0.02 * (((x - 40) / 25) ** 2 + ((y - 20) / 35) ** 2 <= 1)
    img -= 0.012 * ((x + 60) ** 2 + (y + 10) ** 2 <= 30 ** 2)
    return g, ct_operator(g)(torch.from_numpy(img)[None])[0]


@pytest.fixture(scope="module")
def scan():
    return _short_scan()


def test_the_correct_short_scan_is_silent(scan):
    g, y = scan
    assert data_warnings(y, g) == {}


@pytest.mark.parametrize("channel", [566, 568])
def test_a_dead_channel_is_called_dead_not_a_flat_detector(scan, channel):
    """The dead channel is left out of the conjugate pairs, as a source bin and as a
    conjugate target: "dead" is said, nothing about the geometry, and the fan-angle scale
    reads 1 within its errors."""
    g, y = scan
    y = y.clone()
    y[:, channel] = 0.0
    w = data_warnings(y, g)
    assert list(w) == ["dead"] and f"detector bin {channel} reads zero" in w["dead"], w
    fit = conjugate_mismatch(y, g)
    assert all(r < 1.5 for r, _ in fit.causes), fit.causes
    assert abs(fit.stretch - 1) < max(3 * fit.stretch_se, 1e-3), (fit.stretch, fit.stretch_se)


@pytest.mark.parametrize("offset", [0.5, 1.0])
def test_a_hot_channel_is_not_called_a_pitch_error(scan, offset):
    """A channel reading ``offset`` more in every view (a miscalibrated element: a ring
    artefact, not a geometry) biases the fan-angle scale alike in every ray direction; the
    jackknife over groups of channels sees that one group carries it, and nothing is said."""
    g, y = scan
    y = y.clone()
    y[:, 566] += offset
    fit = conjugate_mismatch(y, g)
    assert abs(fit.stretch - 1) < 5 * fit.stretch_se or abs(fit.stretch - 1) < 0.005, fit
    assert all(r < 1.5 for r, _ in fit.causes), fit.causes
    assert "inconsistent" not in data_warnings(y, g)


def test_a_pitch_error_with_a_dead_channel_is_still_named(scan):
    """A pitch 3 % off on the same scan with a dead channel: the scale is still named, within
    1 % of the true pitch."""
    g, y = scan
    y = y.clone()
    y[:, 566] = 0.0
    w = data_warnings(y, replace(g, detector_spacing=1.283 * 1.03))
    assert "u / SDD" in w.get("inconsistent", ""), w
    assert "dead" in w
