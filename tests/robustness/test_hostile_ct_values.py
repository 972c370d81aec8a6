"""CT sinogram values that contradict the file's own attributes or were read as something else:
a dead detector element logged at the count floor, noise of an unknown dose taken as none, a
dose attribute the noise contradicts, pre-log counts at a low dose, a reversed detector axis."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.data.simulate_ct import simulate_ct_dataset
from mrirecon.io.errors import DataFormatError
from mrirecon.io.lodopab import LoDoPaBFiles
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

FAST = ["export.formats=[hdf5]", "report.enabled=false"]
DOSE = ["undersample.enabled=true"]


@pytest.fixture
def ct_copy(ct_dir, tmp_path) -> Path:
    root = tmp_path / "ct"
    shutil.copytree(ct_dir, root)
    return root


def _run(obs: Path, out: Path, *overrides: str) -> dict:
    """``mrirecon run ct_fbp`` on ``obs``; its provenance entry (status, error, warnings)."""
    config = load_pipeline("ct_fbp", [*FAST, *overrides])[0]
    run_pipeline(config, [str(obs)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return entry


def _edit(obs: Path, change) -> None:
    """``change(data, attrs)`` on the stored sinogram (line integrals / mu_max) and attributes."""
    with h5py.File(obs, "r+") as h5:
        data = h5["data"][...]
        new = change(data, h5.attrs)
        if new is not None:
            del h5["data"]
            h5.create_dataset("data", data=new.astype(np.float32))


# ---- 1: a dead detector element read at the count floor --------------------------------------


def test_a_dead_element_at_the_count_floor_is_a_dead_element(ct_copy, tmp_path):
    """Zero counts of a dead element are logged at the floor log(photons / min_photon_count):
    one such bin was called "photon starvation" where it was over 0.5 % of the rays, and not
    named at all below (LoDoPaB's 513 bins: 12 dB, HU -11991..+24301, exit 0)."""
    obs = ct_copy / "observation_test_000.hdf5"
    bins = LoDoPaBFiles(ct_copy, "test").geometry.num_detectors
    col = bins // 2 + 2

    def dead(data, attrs):
        floor = math.log(float(attrs["photons"]) / float(attrs["min_photon_count"]))
        data[:, :, col] = floor / float(attrs["mu_max_per_m"])
        return data

    _edit(obs, dead)
    entry = _run(obs, tmp_path / "out")
    assert entry["status"] == "ok"
    said = [w for w in entry["warnings"] if f"detector bin {col} reads the count floor" in w]
    assert said and "every view" in said[0] and "ring artefact" in said[0], entry["warnings"]
    assert not any("detected no photon" in w for w in entry["warnings"]), entry["warnings"]


def test_a_dead_element_is_named_whatever_its_share_of_the_rays():
    """513 bins (LoDoPaB): one dead bin is 0.19 % of the rays, below the starvation share; a bin
    far above both neighbours is named without a known dose; clean data name none."""
    from mrirecon.pipeline.ct_plausibility import STARVED_FRACTION, dead_columns, floor_warnings

    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 513, dtype=torch.float64)
    body = (4.0 * (1 - x**2).clamp_min(0).sqrt())[None].expand(200, -1)  # a water cylinder
    clean = body + 0.02 * torch.randn(200, 513, generator=g, dtype=torch.float64)
    floor = math.log(4096 / 0.1)
    assert dead_columns(clean, 4096, 0.1) is None and dead_columns(clean) is None
    sino = clean.clone()
    sino[:, 271] = floor
    assert 1 / 513 < STARVED_FRACTION
    msgs = floor_warnings(sino, 4096, 0.1)
    assert set(msgs) == {"dead"} and "detector bin 271 reads the count floor" in msgs["dead"]
    cols, msg = dead_columns(sino)  # no dose known: far above both neighbours
    assert cols == [271] and "far above both neighbouring bins" in msg
    # a neighbourhood starved in every view is starvation, not a dead element
    starved = clean.clone()
    starved[:, 200:300] = floor
    msgs = floor_warnings(starved, 4096, 0.1)
    assert set(msgs) == {"starved"}


# ---- 2: noise of an unknown dose -------------------------------------------------------------


@pytest.mark.parametrize("keep_floor", [True, False])
def test_noise_of_an_unknown_dose_gets_no_second_dose(ct_copy, tmp_path, keep_floor):
    """A noisy file without attrs/photons was taken as noise-free: undersample.photons=4096
    added a second dose (effective 1948) and the note said "on noise-free data". Its
    min_photon_count (written only with noise) or its negative line integrals tell."""
    obs = ct_copy / "observation_test_000.hdf5"

    def strip(data, attrs):
        del attrs["photons"]
        if not keep_floor:
            del attrs["min_photon_count"]

    _edit(obs, strip)
    entry = _run(obs, tmp_path / "out", *DOSE, "undersample.photons=4096")
    assert entry["status"] == "failed"
    assert "observation_test_000.hdf5: undersample.photons: the data hold noise but their dose " \
           "is unknown" in entry["error"] and "attrs/photons" in entry["error"]
    assert ("min_photon_count" if keep_floor else "line integrals are negative") in entry["error"]
    # reconstructed as stored, the file still runs
    assert _run(obs, tmp_path / "plain")["status"] == "ok"


def test_the_ct_training_set_refuses_a_second_dose_on_noise_of_an_unknown_dose(ct_copy):
    """The training set adds ``photons`` noise as the pipeline does, so it keeps its rule: a
    noisy file without attrs/photons is refused, not given a second, unrecorded dose."""
    from mrirecon.training.data_ct import CTTrainingSet

    obs = ct_copy / "observation_test_000.hdf5"
    def strip(data, attrs):
        del attrs["photons"]

    _edit(obs, strip)
    ds = CTTrainingSet(ct_copy, photons=4096, train=False)
    with pytest.raises(ValueError, match=r"CTTrainingSet: observation_test_000.hdf5: photons: "
                                         r"the data hold noise but their dose is unknown"):
        ds.get(0)
    assert CTTrainingSet(ct_copy, train=False).get(0) is not None  # as stored


def test_noise_free_files_still_get_the_dose_asked_for(tmp_path):
    from mrirecon.sampling.views import check_noise_free

    simulate_ct_dataset(tmp_path / "nf", views=24, photons=None, size=16, seed=2, samples=1,
                        part="test", sources="phantom")
    obs = tmp_path / "nf" / "observation_test_000.hdf5"
    check_noise_free(LoDoPaBFiles(tmp_path / "nf", "test").sinogram(0).data, "x")
    entry = _run(obs, tmp_path / "out", *DOSE, "undersample.photons=256")
    assert entry["status"] == "ok"
    assert any("Poisson noise at 256 photons per bin on noise-free data" in n
               for n in entry["notes"]), entry["notes"]


# ---- 3: a dose attribute the noise contradicts ------------------------------------------------


def _simulated(root: Path, photons: float) -> Path:
    simulate_ct_dataset(root, views=180, photons=photons, size=64, seed=4, samples=1,
                        part="test", sources="phantom")
    return root / "observation_test_000.hdf5"


def test_a_dose_attribute_the_noise_contradicts_is_refused(tmp_path):
    """1024-photon data labelled 4096: the recovered counts are 4x the true ones (whole numbers
    still), and "thinning exactly to 1024" gave an effective 546, noted exact."""
    obs = _simulated(tmp_path / "wp", 1024.0)
    _edit(obs, lambda data, attrs: attrs.__setitem__("photons", 4096.0))
    entry = _run(obs, tmp_path / "out", *DOSE, "undersample.photons=1024")
    assert entry["status"] == "failed", entry
    assert "DataFormatError: observation_test_000.hdf5: attrs/photons: the data's noise says " \
           "about " in entry["error"] and "not the 4096 stated" in entry["error"]
    said = float(entry["error"].split("says about ")[1].split()[0])
    assert 1024 / 2 < said < 1024 * 2  # the dose the noise holds, not the attribute's


@pytest.mark.parametrize("photons", [64.0, 1024.0, 4096.0, 1e5])
def test_correct_dose_attributes_thin_as_before(tmp_path, photons):
    from mrirecon.sampling import thin_dose

    _simulated(tmp_path / "ok", photons)
    f = LoDoPaBFiles(tmp_path / "ok", "test")
    y = f.sinogram(0).data
    out = thin_dose(y, f.data_photons, photons / 4, torch.Generator().manual_seed(0),
                    min_counts=f.min_photon_count, source="observation_test_000.hdf5")
    assert out.shape == y.shape
    with pytest.raises(DataFormatError, match=r"observation_test_000.hdf5: attrs/photons: the "
                                              r"data's noise says about"):
        thin_dose(y, 4 * photons, photons / 4, torch.Generator().manual_seed(0),
                  min_counts=f.min_photon_count, source="observation_test_000.hdf5")


# ---- 4: pre-log counts at a low dose ---------------------------------------------------------


@pytest.mark.parametrize("i0", [500.0, 10.0])
def test_pre_log_counts_at_a_low_dose_are_refused(ct_copy, tmp_path, i0):
    """Counts at <= ~1000 photons stay below MAX_LINE_INTEGRAL: exit 0 and +-260,000 HU, said
    "truncated" or "another scale", never pre-log; the file's photons and min_photon_count
    allow no line integral above log(photons / min_photon_count)."""
    obs = ct_copy / "observation_test_000.hdf5"

    def counts(data, attrs):
        mu = float(attrs["mu_max_per_m"])
        return i0 * np.exp(-data * mu) / mu

    _edit(obs, counts)
    entry = _run(obs, tmp_path / "out")
    assert entry["status"] == "failed"
    for words in ("above log(photons / min_photon_count)", "attrs/photons",
                  "attrs/min_photon_count", "pre-log counts"):
        assert words in entry["error"], entry["error"]


def test_line_integrals_ten_times_too_large_are_refused_naming_the_unit(ct_copy, tmp_path):
    """A 1/cm-for-1/mm mix-up (every line integral 10x) was refused as "pre-log counts (or
    I / I0)", neither of which peaks at 10x a post-log sinogram's values."""
    obs = ct_copy / "observation_test_000.hdf5"
    _edit(obs, lambda data, attrs: 10.0 * data)
    entry = _run(obs, tmp_path / "out")
    assert entry["status"] == "failed"
    assert "or line integrals at another scale (attenuation per cm where per mm belongs reads " \
           "10x" in entry["error"], entry["error"]


def test_air_at_the_top_is_called_pre_log_at_any_scale():
    """Without a dose to compare with, counts (air at I0 = 500) were "truncated"."""
    from mrirecon.pipeline.ct_consistency import transmission_warning

    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    line = 3.0 * (1 - (x / 0.7) ** 2).clamp_min(0).sqrt()
    counts = torch.poisson(500 * torch.exp(-line)[None].expand(60, -1).contiguous(),
                           generator=torch.Generator().manual_seed(0))
    msg = transmission_warning(counts, 3)
    assert msg is not None and "pre-log counts" in msg
    assert transmission_warning(line[None].expand(60, -1), 3) is None  # post-log: air ~0


# ---- 5: a reversed detector axis -------------------------------------------------------------


def test_a_rotated_or_mirrored_match_names_the_sinogram_too():
    """A reversed detector axis gives a 180-degree rotated image; the warning blamed only the
    ground truth's layout."""
    from mrirecon.pipeline.stages_ct import reference_orientation

    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 64, 64, generator=g), 5, 1, 2)[0]
    image[:20, :30] += 1.0  # no symmetry
    rotated = reference_orientation(image.flip(-1, -2), image)
    assert rotated is not None and "rotated 180 degrees" in rotated
    assert "the sinogram's detector axis reversed" in rotated
    mirrored = reference_orientation(image.flip(-1), image)
    assert mirrored is not None and "views in reverse angle order" in mirrored
    assert "detector axis" not in mirrored


# ---- 6: post-log data of a scan inside a pipe; one count-floor rule ------------------------


def _pipe_scan(fill: float, wall: bool = True):
    """A parallel-beam scan (128 px, 180 views) of a disc of attenuation ``fill`` inside a
    bone-like wall (twice water) just outside the detector span (or no wall, the disc well
    inside it): post-log line integrals and the geometry."""
    from mrirecon.operators import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    n, px, water = 128, 260 / 128, 0.0192
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2) * px
    half = 0.4 * n * px  # the detector's half width, mm
    inside = r < (1.03 if wall else 0.7) * half
    mu = fill * inside + 2 * water * (wall & (r >= 1.03 * half) & (r < 1.15 * half))
    g = CTGeometry(beam="parallel", image_shape=(n, n),
                   angles=tuple(np.linspace(0, math.pi, 180, endpoint=False)), num_detectors=104,
                   pixel_size=px, detector_spacing=2 * half / 104)
    return ct_operator(g)(torch.as_tensor(mu, dtype=torch.float32)[None])[0].double(), g


def test_post_log_data_inside_a_pipe_are_truncated_not_counts():
    """Review rev16b: a region-of-interest scan inside an air-filled pipe reads ~2.3 in its
    outer bins (they graze the wall), the sinogram's top: it was called "pre-log counts or
    transmission at another scale (air at I0 = 2.31?) ... the object's negative", and that
    hid the (right) truncation warning. Post-log data reach at most log(photons /
    min_photon_count), or ~30 (one count of 1e13 photons): air below that is no count."""
    from mrirecon.pipeline.ct_consistency import POST_LOG_REACH, transmission_warning
    from mrirecon.pipeline.ct_plausibility import count_floor
    from mrirecon.pipeline.stages_ct import data_warnings

    sino, g = _pipe_scan(0.0)
    counts = torch.poisson(4096 * torch.exp(-sino), generator=torch.Generator().manual_seed(0))
    noisy = -torch.log(counts.clamp_min(1.0) / 4096)
    for y in (sino, noisy):
        assert float(y[:, :2].mean()) > 0.8 * float(y.quantile(0.99))  # the edges are the top
        msgs = data_warnings(y.float(), g)
        assert "transmission" not in msgs and "truncated" in msgs, msgs
    # pre-log counts of an object inside the field of view: air (500) is the top, named
    body, g = _pipe_scan(0.0192, wall=False)
    pre = torch.poisson(500 * torch.exp(-body), generator=torch.Generator().manual_seed(1))
    assert 500 > POST_LOG_REACH
    assert "pre-log counts" in data_warnings(pre.float(), g)["transmission"]
    # I / I0 at 4096 photons stored x 20: air below POST_LOG_REACH is not judged here (a file
    # stating its dose is refused above its count floor by above_count_floor, before)
    scaled = 20 * torch.poisson(4096 * torch.exp(-body),
                                generator=torch.Generator().manual_seed(2)) / 4096
    assert transmission_warning(scaled, 2) is None
    assert float(scaled.max()) > count_floor(4096, 0.1)


def test_one_count_floor_rule():
    """The count floor log(photons / min_counts) had two copies (the starvation / dead-element
    checks and the refusal of values above it); the refusal and the bins at the floor agree."""
    from mrirecon.pipeline.ct_consistency import above_count_floor
    from mrirecon.pipeline.ct_plausibility import FLOOR_RTOL, count_floor, floor_warnings

    assert count_floor(4096, 0.1) == math.log(40960)
    assert count_floor(None, 0.1) is None and count_floor(4096, None) is None
    assert count_floor(0.1, 0.1) is None
    floor = count_floor(4096, 0.1)
    assert above_count_floor(floor, 4096, 0.1) is None
    assert above_count_floor(floor * (1 + 2 * FLOOR_RTOL), 4096, 0.1) is not None
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    sino = (4.0 * (1 - x**2).clamp_min(0).sqrt())[None].repeat(60, 1)
    sino[:, 45:55] = floor * (1 + 0.5 * FLOOR_RTOL)  # starved, within the stored floor's rounding
    assert set(floor_warnings(sino, 4096, 0.1)) == {"starved"}
