"""A full turn on an offset (half-fan, extended field of view) detector: every ray of the object
is measured at least once, the middle ones twice. The FBP's full-scan factor 1/2 counted the
rays beyond the short side half (a quarter-width offset: 11.7 dB, water +251 HU; an eighth
39.7 -> 29.7 dB) and the filtered projections' tails beyond the short side were dropped; the
pipeline then called the one-sided profile "truncated" and blamed ct_tv's correct image for
differing from that FBP."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mrirecon.operators import ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.fbp import fbp, offset_weights, symmetric_detector
from mrirecon.pipeline.ct_plausibility import bulk_shift_warning
from mrirecon.pipeline.stages_ct import data_warnings

N, PX = 96, 2.0
MU_W = 0.02


def _phantom() -> torch.Tensor:
    """A water ellipse (80 x 64 mm semi-axes) with a denser and a lighter insert (1/mm)."""
    y, x = np.mgrid[:N, :N].astype(np.float64)
    x, y = (x - (N - 1) / 2) * PX, ((N - 1) / 2 - y) * PX
    img = MU_W * ((x / 80) ** 2 + (y / 64) ** 2 <= 1)
    img = img + 0.02 * ((x - 25) ** 2 + (y - 15) ** 2 <= 15**2)
    img = img - 0.01 * ((x + 30) ** 2 + (y + 10) ** 2 <= 12**2)
    return torch.from_numpy(img)


def _wide(beam: str, detector: str = "flat") -> CTGeometry:
    """A centred detector of 2 x 160 bins, far wider than the object (both sides read air)."""
    if beam == "parallel":
        return CTGeometry.parallel((N, N), 360, 320, angle_range=2 * math.pi, pixel_size=PX,
                                   detector_spacing=1.0)
    return CTGeometry.fan((N, N), 360, 320, source_isocenter=500.0, source_detector=1000.0,
                          detector=detector, pixel_size=PX, detector_spacing=2.0)


def _offset(g: CTGeometry, first: int, count: int) -> CTGeometry:
    """Elements ``first .. first + count - 1`` of the centred ``g``, at their positions."""
    centre = first + (count - 1) / 2 - (g.num_detectors - 1) / 2
    return replace(g, num_detectors=count, detector_offset=-centre * g.detector_spacing)


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.max() ** 2 / ((x - ref) ** 2).mean()))


@pytest.mark.parametrize("beam, detector", [("fan", "flat"), ("fan", "curved"),
                                            ("parallel", "flat")])
@pytest.mark.parametrize("short_side", [10, 40])
def test_an_offset_detector_full_turn_matches_the_centred_detector(beam, detector, short_side):
    """The offset detector holds the wide one's elements from ``160 - short_side`` to its last
    (the short side reaches 10 or 40 bins past the axis, far inside the object; the long side
    beyond the object): its FBP is the wide detector's within 1 dB and 2 HU of water, where the
    rays beyond the short side counted half before."""
    x = _phantom()
    wide = _wide(beam, detector)
    y = ct_operator(wide)(x)
    first = wide.num_detectors // 2 - short_side
    g = _offset(wide, first, wide.num_detectors - first)
    assert np.allclose(g.detector_positions, wide.detector_positions[first:])
    ref, img = fbp(y, wide), fbp(y[:, first:].contiguous(), g)
    water = (x - MU_W).abs() < 1e-12
    assert _psnr(img, x) > _psnr(ref, x) - 1.0, (_psnr(img, x), _psnr(ref, x))
    hu = 1000 * (img[water].mean() - ref[water].mean()) / MU_W
    assert abs(float(hu)) < 2.0, float(hu)


def test_offset_weights_sum_to_one_over_conjugate_rays():
    """``w(u) + w(-u) = 1`` wherever both lie on the detector, 1 on the long side beyond the
    short one, 1/2 in the middle; none for a centred detector."""
    g = _offset(_wide("fan"), 120, 200)
    gam = g.fan_angles
    w = offset_weights(gam)
    mirrored = np.interp(-gam, gam, w, left=np.nan, right=np.nan)
    both = ~np.isnan(mirrored)
    assert np.allclose((w + mirrored)[both], 1.0, atol=1e-3)  # linear interpolation of sin²
    assert np.all(w[gam > -gam.min()] == 1.0) and abs(w[np.argmin(np.abs(gam))] - 0.5) < 1e-3
    assert offset_weights(_wide("fan").fan_angles) is None
    ext, before, after = symmetric_detector(g)
    assert (before, after) == (120, 0) and ext.num_detectors == 320
    assert np.allclose(ext.detector_positions[before:], g.detector_positions)
    assert np.isclose(ext.detector_positions[0], -ext.detector_positions[-1])


def test_a_half_fan_scan_is_neither_truncated_nor_blames_a_correct_image():
    """The short side's outer bins lie inside the object by design: no "truncated" warning
    when the long side's read air; the preview FBP is right, so a correct image (the phantom)
    is not said to be biased against it (it was: "-254 HU off the Hann FBP's")."""
    x = _phantom()
    wide = _wide("fan")
    y = ct_operator(wide)(x)
    first = wide.num_detectors // 2 - 10
    g = _offset(wide, first, wide.num_detectors - first)
    yo = y[:, first:].contiguous()
    assert data_warnings(yo, g) == {}
    assert bulk_shift_warning(x, fbp(yo, g, filter="hann"), "tv_ct") is None
    # a real truncation of the long side is still reported
    cut = _offset(wide, first, 80)  # the long side ends inside the object
    assert "truncated" in data_warnings(y[:, first:first + 80].contiguous(), cut)
