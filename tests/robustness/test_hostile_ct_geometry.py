"""CT geometry written another way than the code assumed, or contradicted by the data.

* A fan-beam short scan whose angles pass through 0 / 2π (230°..459°, or the same angles
  stored modulo a turn) gave 16.1 dB against 27.8 from the scan starting at 0 (a wider detector
  24.4 dB): the view weights folded the angles and weighted the views beside the gap in the
  middle by 1.28 rad, Parker's weights measured the scan from the first view stored, and the
  views were sorted into two runs. Parallel limited-angle FBP depended on where the scan began.
* Fan-beam geometry in another unit or convention (detector pitch at the isocentre, lengths
  in pixels) or a square fan-beam sinogram stored transposed gave 12-23 dB with no word naming
  the geometry.
* Pre-log transmission (I / I0, or percent) stored where line integrals belong gave 10 /
  -18.6 dB with warnings pointing elsewhere: truncated projections, another scale, a
  reference rotated by 270° and its slices reversed.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.operators import ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.fbp import (_is_short_scan, angular_weights, fbp, parker_weights,
                                    scan_offsets)
from mrirecon.pipeline.ct_plausibility import coverage_warning
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.stages_ct import angle_order, data_warnings

FAST = ["export.formats=[hdf5]", "report.enabled=false"]
DEG = math.pi / 180


def _fan(angles, size: int = 64, detector: str = "flat", detectors: int | None = None
         ) -> CTGeometry:
    """Fan beam over a ``size``² image of 2 mm pixels, source 300 mm from the isocentre, 500 mm
    from the detector (the image subtends 2 asin(90.5 / 300) = 35°)."""
    g = CTGeometry.fan((size, size), 8, detectors, source_isocenter=300.0, source_detector=500.0,
                       detector=detector, pixel_size=2.0)
    return replace(g, angles=tuple(float(a) for a in angles))


def _disc(size: int = 64) -> torch.Tensor:
    """A centred water disc with a denser ring (rotationally symmetric: every start angle of a
    scan sees the same object), 1 / mm."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                          torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    r = (x**2 + y**2).sqrt()
    return 0.02 * (r < 0.6) + 0.01 * ((r > 0.3) & (r < 0.4))


SHORT = np.arange(230) * DEG  # 180° + the 35° fan + margin, 1° steps


def _error(image: torch.Tensor, truth: torch.Tensor) -> float:
    return float((image - truth).norm() / truth.norm())


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_a_short_scan_gives_one_image_wherever_it_starts_and_however_its_angles_are_written(
        detector):
    """230°..459° unwrapped, the same angles modulo 2π in acquisition order (230°..359°,
    0°..99°) or sorted after folding (0°..99°, 230°..359°): one image, as good as the scan
    starting at 0 (on a rotationally symmetric object). Before: 3x the error."""
    mu = _disc()
    start0 = _fan(SHORT, detector=detector)
    unwrapped = _fan(230 * DEG + SHORT, detector=detector)
    wrapped = _fan(np.mod(230 * DEG + SHORT, 2 * math.pi), detector=detector)
    order = np.argsort(wrapped.angles)
    folded = replace(wrapped, angles=tuple(wrapped.angles[i] for i in order))
    ref = fbp(ct_operator(start0)(mu), start0)
    image = fbp(ct_operator(unwrapped)(mu), unwrapped)
    sino = ct_operator(wrapped)(mu)
    for g, y in ((wrapped, sino), (folded, sino[order])):
        np.testing.assert_allclose(fbp(y, g), image, rtol=0, atol=1e-4 * float(image.abs().max()))
    assert _error(image, mu) < 1.1 * _error(ref, mu) < 0.2


def test_view_and_parker_weights_do_not_depend_on_where_the_scan_starts():
    """The views beside a gap in the middle of the folded angles weigh one step, not half the
    gap (1.28 rad); Parker's weights follow each view's offset in the scan."""
    step = SHORT[1]
    gam = np.linspace(-0.3, 0.3, 11)
    ref = parker_weights(SHORT, gam)
    for start in (0.0, 1.0, 4.0, -math.pi / 2, 230 * DEG):
        for angles in (start + SHORT, np.mod(start + SHORT, 2 * math.pi)):
            np.testing.assert_allclose(angular_weights(angles, 2 * math.pi), step, rtol=1e-9)
            np.testing.assert_allclose(scan_offsets(angles), SHORT, atol=1e-9)
            np.testing.assert_allclose(parker_weights(angles, gam), ref, atol=1e-9)
            assert _is_short_scan(_fan(angles))
    shuffled = np.random.default_rng(0).permutation(230)  # views in any stored order
    np.testing.assert_allclose(parker_weights(230 * DEG + SHORT[shuffled], gam), ref[shuffled],
                               atol=1e-9)
    # parallel limited angle: 0..120° and -60..60° weigh alike (and so image alike)
    limited = np.arange(120) * DEG
    for angles in (limited - 60 * DEG, limited + 100 * DEG):
        np.testing.assert_allclose(angular_weights(angles, math.pi), DEG, rtol=1e-9)
    assert not _is_short_scan(_fan(np.mod(1.0 + np.arange(360) * DEG, 2 * math.pi)))
    # ascending angles from 0 keep their exact offsets (the shipped pipelines' data)
    assert np.array_equal(scan_offsets(SHORT), SHORT)


def test_views_missing_inside_a_covered_arc_keep_their_weights():
    """Only the gap where the scan ends counts as one step: views missing inside the covered
    arc (three dropped views; the interleaved halves that scan-specific adaptation splits 30
    views into) still weigh half the gaps beside them, summing to the half turn."""
    w = angular_weights(np.delete(np.arange(180) * DEG, [40, 41, 42]), math.pi)
    assert w[39] == pytest.approx(2.5 * DEG) and w[40] == pytest.approx(2.5 * DEG)
    a = (np.arange(30) + 0.5) * math.pi / 30
    train = np.array([i for i in range(30) if i % 5])  # every 5th view held back
    for half in (train[0::2], train[1::2]):
        np.testing.assert_allclose(angular_weights(a[half], math.pi), 2.5 * math.pi / 30)
        assert scan_offsets(a[half], math.pi)[0] == 0.0


def test_views_are_ordered_circularly():
    """A wrapped scan in acquisition order is in order; stored sorted after folding it is put
    back into one run from 230°; ordinary ascending angles are left alone."""
    wrapped = np.mod(230 * DEG + SHORT, 2 * math.pi)
    assert angle_order(_fan(wrapped)) is None
    folded = np.sort(wrapped)
    rows = angle_order(_fan(folded))
    assert rows is not None and np.allclose(folded[rows], wrapped)
    assert angle_order(_fan(SHORT)) is None
    assert angle_order(_fan(np.arange(360) * DEG)) is None
    assert angle_order(_fan(np.arange(720) * DEG)) is None  # two turns, ascending


def test_coverage_of_a_wrapped_fan_scan_is_measured_circularly():
    """A 180° fan scan through 0 / 2π (short of 180° + fan) warns, a 230° one does not."""
    assert coverage_warning(_fan(np.mod(300 * DEG + np.arange(180) * DEG, 2 * math.pi)))
    assert coverage_warning(_fan(np.mod(300 * DEG + SHORT, 2 * math.pi))) is None


def _write(folder: Path, geometry: CTGeometry, sinogram: np.ndarray, mu: np.ndarray) -> Path:
    from mrirecon.io.lodopab import write_lodopab

    write_lodopab(folder, "test", sinogram, mu, geometry=geometry, photons=4096.0,
                  min_photon_count=1.0)
    return folder / "observation_test_000.hdf5"


def _run(obs: Path, out: Path) -> dict:
    config = load_pipeline("ct_fbp", FAST)[0]
    assert run_pipeline(config, [str(obs)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return entry


@pytest.fixture(scope="module")
def fan_scan():
    """A phantom projected by a 128² fan beam (clinical distances) over a full turn, 4096
    photons: ``(sinogram (1, V, D), attenuation (1, H, W), geometry)``."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    g = CTGeometry.fan((96, 96), 180, None, source_isocenter=595.0, source_detector=1085.6,
                       pixel_size=260.0 / 96)
    sim = simulate_ct_samples(1, g, photons=4096.0, sources="phantom", seed=3)
    return sim.sinogram, sim.attenuation, g


def test_a_wrapped_short_scan_file_is_reconstructed_as_the_unwrapped_one(tmp_path):
    """ct_fbp on a LoDoPaB-layout short scan stored 230°..459° and the same stored modulo 2π:
    the same image and metrics, no note of sorting."""
    mu = _disc(64)[None].numpy()
    out = {}
    for name, angles in (("unwrapped", 230 * DEG + SHORT),
                         ("wrapped", np.mod(230 * DEG + SHORT, 2 * math.pi))):
        g = _fan(angles)
        sino = ct_operator(g)(torch.from_numpy(mu)).numpy()
        out[name] = _run(_write(tmp_path / name, g, sino, mu), tmp_path / f"o_{name}")
    assert out["wrapped"]["metrics"] == pytest.approx(out["unwrapped"]["metrics"], rel=1e-5)
    assert out["wrapped"]["metrics"]["psnr"] > 22
    assert not any("sorted" in n for n in out["wrapped"]["notes"]), out["wrapped"]["notes"]


# ---- fan-beam geometry the data contradict ---------------------------------------------------


def _mislabelled(g: CTGeometry) -> dict[str, tuple[CTGeometry, str]]:
    px = g.pixel_size
    sid, sdd = g.source_isocenter, g.source_detector
    return {"pitch at the isocentre": (replace(g, detector_spacing=g.detector_spacing * sid / sdd),
                                       "detector_spacing given at the isocentre"),
            "pitch in pixels": (replace(g, detector_spacing=g.detector_spacing / px),
                                "detector_spacing in pixels"),
            "distances in pixels": (replace(g, source_isocenter=sid / px, source_detector=sdd / px),
                                    "source_isocenter and source_detector in pixels")}


def test_fan_beam_geometry_in_other_units_warns_naming_it(fan_scan):
    """Conjugate rays p(β, γ) = p(β + π - 2γ, -γ) agree as labelled on the correct geometry
    and far better with the fan angles rescaled on a mislabelled one; the warning names
    attrs/geometry and the likely cause."""
    sino, _, g = fan_scan
    y = torch.from_numpy(sino[0]).float()
    assert "inconsistent" not in data_warnings(y, g)
    for name, (wrong, cause) in _mislabelled(g).items():
        msg = data_warnings(y, wrong).get("inconsistent")
        assert msg is not None and "attrs/geometry" in msg and cause in msg, (name, msg)
        assert "transposed" in msg


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("photons", [None, 500.0])
def test_correct_fan_beam_data_do_not_warn(detector, photons):
    """Correctly labelled fan data, noise-free or at 500 photons per bin, full turn or a short
    scan through 0 / 2π: no warning (calibrated down to 250 photons: best rescaled fit at most
    1.05x better than as labelled; the threshold is 1.5x)."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    for angles in (np.arange(180) * 2 * DEG, np.mod(200 * DEG + np.arange(250) * DEG, 2 * math.pi)):
        g = CTGeometry.fan((64, 64), 8, None, source_isocenter=400.0, source_detector=800.0,
                           detector=detector, pixel_size=4.0)
        g = replace(g, angles=tuple(angles))
        sim = simulate_ct_samples(1, g, photons=photons, sources="phantom", seed=7)
        msgs = data_warnings(torch.from_numpy(sim.sinogram[0]).float(), g)
        assert "inconsistent" not in msgs, msgs


def test_a_transposed_square_fan_sinogram_warns():
    """A square fan-beam sinogram (views = detectors) stored transposed: 12.98 dB, no word
    naming the geometry (only "truncated")."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    g = CTGeometry.fan((64, 64), 8, None, source_isocenter=595.0, source_detector=1085.6,
                       pixel_size=260.0 / 64)
    n = g.num_detectors
    g = replace(g, angles=tuple(np.arange(n) * 2 * math.pi / n))
    y = torch.from_numpy(simulate_ct_samples(1, g, photons=4096.0, sources="phantom",
                                             seed=1).sinogram[0]).float()
    assert "inconsistent" not in data_warnings(y, g)
    msgs = data_warnings(y.T.contiguous(), g)
    assert "no scale of the fan angles makes them agree" in msgs["inconsistent"]
    assert "truncated" not in msgs


def test_a_mislabelled_fan_file_warns_in_the_run(fan_scan, tmp_path):
    """Through ct_fbp: the detector pitch given at the isocentre (12.1 dB) is a warning of the
    input's record naming the geometry."""
    sino, mu, g = fan_scan
    wrong, cause = _mislabelled(g)["pitch at the isocentre"]
    entry = _run(_write(tmp_path / "iso", wrong, sino, mu), tmp_path / "out")
    assert any(cause in w and "attrs/geometry" in w for w in entry["warnings"]), entry["warnings"]


# ---- pre-log transmission ----------------------------------------------------------------------


@pytest.mark.parametrize("factor, kind", [(1.0, "I / I0, air at 1"), (100.0, "in percent")])
def test_pre_log_transmission_is_named_not_truncated(fan_scan, factor, kind):
    """I / I0 (or percent) where line integrals belong: "pre-log transmission", not truncated
    projections; the post-log sinogram is no such warning."""
    sino, _, g = fan_scan
    y = torch.from_numpy(sino[0])
    assert "transmission" not in data_warnings(y.float(), g)
    msgs = data_warnings((factor * torch.exp(-y)).float(), g)
    assert kind in msgs["transmission"] and "-log(I / I0)" in msgs["transmission"]
    assert "truncated" not in msgs and "inconsistent" not in msgs


def test_an_inverted_image_is_not_called_a_rotated_reference():
    """The FBP of transmission data is the reference's negative: as read -0.9, a rotation
    "matched" at -0.49 and the slices "reversed" at -0.05 against -0.69. Now: inverted, and no
    rotation or slice order is named; a rotated reference still is."""
    from mrirecon.pipeline.reference_checks import orientation_note, slice_order_note

    from mrirecon.data.simulate_ct import random_ellipses_hu

    truth = torch.stack([torch.from_numpy(random_ellipses_hu((64, 64), np.random.default_rng(i)))
                         for i in range(3)]).float()
    msg = orientation_note(truth, -truth, "the data's FBP")
    assert msg is not None and "looks inverted" in msg and "transmission" in msg
    assert "rotated" not in msg and "flipped" not in msg
    assert slice_order_note(truth, -truth) is None
    turned = orientation_note(torch.rot90(truth, 1, (-2, -1)), truth, "the data's FBP")
    assert turned is not None and "rotated" in turned
    assert orientation_note(truth, truth, "the data's FBP") is None


def test_a_transmission_file_gets_the_right_warnings(fan_scan, tmp_path):
    """Through ct_fbp: the transmission warning and the inverted image, none of "truncated",
    "another scale", a rotated reference or reversed slices."""
    sino, mu, g = fan_scan
    entry = _run(_write(tmp_path / "t", g, np.exp(-sino), mu), tmp_path / "out")
    text = " ".join(entry["warnings"])
    assert "pre-log transmission data (I / I0" in text and "looks inverted" in text
    for wrong in ("truncated", "another scale", "rotated", "reverse order"):
        assert wrong not in text, (wrong, text)


def test_post_log_data_of_a_scan_inside_a_ring_are_not_called_transmission():
    """Review of a13: a parallel-beam scan that sees only the inside of a hollow cylinder (outer
    radius 1, inner 0.45, detector |s| <= 0.55) reads line integrals ~1 at its edges and more
    within (1.1 at the ring's inner edge) - post-log data, truncated; it was called pre-log
    transmission, and that hid the truncation warning."""
    from mrirecon.pipeline.ct_consistency import transmission_warning
    s = torch.linspace(-0.55, 0.55, 111, dtype=torch.float64)
    chord = 2 * (1 - s**2).sqrt() - 2 * (0.2025 - s**2).clamp_min(0).sqrt()
    sino = 0.61 * chord.expand(60, -1) + 0.01 * torch.randn(60, 111, dtype=torch.float64,
                                                            generator=torch.Generator().manual_seed(0))
    assert transmission_warning(sino.float(), 4) is None
    assert transmission_warning(torch.exp(-sino).float(), 4) is None  # pre-log, but no air
    # the same ring seen whole (air at both edges), as I / I0: named
    s = torch.linspace(-1.2, 1.2, 241, dtype=torch.float64)
    chord = (2 * (1 - s**2).clamp_min(0).sqrt() - 2 * (0.2025 - s**2).clamp_min(0).sqrt())
    pre = torch.exp(-0.61 * chord).expand(60, -1) + 0.01 * torch.randn(
        60, 241, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert "pre-log transmission" in transmission_warning(pre.float(), 8)


def test_fan_source_on_the_inscribed_circle_is_refused():
    """A source exactly on the field of view's circle (source_isocenter = the inscribed radius)
    lies in the field of view's closure: refused like one inside it."""
    with pytest.raises(ValueError, match="inside the field of view"):
        CTGeometry("fan", (64, 48), (0.0, 1.0), 100, pixel_size=0.5, source_isocenter=12.0,
                   source_detector=40.0)
