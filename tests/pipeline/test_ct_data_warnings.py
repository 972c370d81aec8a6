"""Sinograms that look valid but cannot be what their geometry says (transposed, angles in
degrees or over the wrong span, lengths in metres, a dead detector bin, too few views): each is
refused or reported by name, measured on an exact parallel-beam projection of a phantom."""

from __future__ import annotations

import json
import math
import re
import h5py
import numpy as np
import pytest
import torch

from mrirecon.operators import ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.stages_ct import (MASS_SPREAD, OPPOSITE_MISMATCH, opposite_view_mismatch,
                                         data_warnings)
from mrirecon.sampling import low_dose_noise


def _phantom(n: int = 64) -> torch.Tensor:
    """An off-centre ellipse with a dense insert, inside the inscribed circle (1 / mm)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, n, dtype=torch.float64),
                          torch.linspace(-1, 1, n, dtype=torch.float64), indexing="ij")
    body = ((x - 0.1) / 0.7) ** 2 + (y / 0.45) ** 2 < 1
    insert = (x + 0.2) ** 2 + (y - 0.1) ** 2 < 0.15 ** 2
    return 0.019 * body + 0.03 * insert


def _geometry(views: int, span: float = math.pi, n: int = 64) -> CTGeometry:
    angles = tuple(np.linspace(0, span, views, endpoint=False))
    return CTGeometry("parallel", (n, n), angles, num_detectors=91, pixel_size=2.0,
                      detector_spacing=2.0)


def _sinogram(geometry: CTGeometry, photons: float | None = 4096.0) -> torch.Tensor:
    y = ct_operator(geometry)(_phantom(geometry.image_shape[0])).float()
    return y if photons is None else low_dose_noise(y, photons, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("photons", [None, 4096.0, 64.0])
def test_a_consistent_sinogram_raises_no_warning(photons):
    g = _geometry(91)
    assert data_warnings(_sinogram(g, photons), g) == {}
    full = _geometry(180, 2 * math.pi)  # a full turn: views half a turn apart are mirrors
    assert data_warnings(_sinogram(full, photons), full) == {}


def test_a_transposed_square_sinogram_is_reported_as_inconsistent():
    g = _geometry(91)  # 91 views, 91 detectors: the shape check cannot see the transposition
    y = _sinogram(g)
    warnings = data_warnings(y.T.contiguous(), g)
    assert set(warnings) == {"inconsistent"}, warnings
    assert "views' total line integrals vary" in warnings["inconsistent"]
    assert "transposed (detectors x views)" in warnings["inconsistent"]
    sums = y.double().sum(-1)
    assert float(sums.std() / sums.mean()) < MASS_SPREAD / 10  # the real one: 10x margin


def test_a_half_turn_scan_labelled_as_a_full_turn_is_reported():
    half, full = _geometry(180, math.pi), _geometry(180, 2 * math.pi)
    y = _sinogram(half, 64.0)
    assert opposite_view_mismatch(_sinogram(full, 64.0).double(), full) < OPPOSITE_MISMATCH
    warnings = data_warnings(y, full)
    assert "views half a turn apart disagree" in warnings["inconsistent"]


def test_dead_detector_bin_and_too_few_views_are_reported():
    g = _geometry(91)
    y = _sinogram(g)
    y[:, 45] = 0  # the central bin: inside the object in every view
    assert list(data_warnings(y, g)) == ["dead"]
    assert "detector bin 45 reads zero in every view" in data_warnings(y, g)["dead"]
    few = _geometry(3)
    assert "only 3 views" in data_warnings(_sinogram(few), few)["views"]


def test_repeated_angles_are_reported_as_too_few_directions():
    # before: only the number of views was checked: a geometry whose 30 angles were all the
    # same raised no warning, and ct_fbp wrote a 9 dB image with exit 0
    g = _geometry(30)
    y = _sinogram(g)
    same = CTGeometry("parallel", g.image_shape, (g.angles[0],) * 30, num_detectors=91,
                      pixel_size=2.0, detector_spacing=2.0)
    msg = data_warnings(y, same)["views"]
    assert msg.startswith("the geometry's 30 angles give only 1 distinct direction (repeated "
                          "angles, or views half a turn apart): below 8 directions"), msg
    assert "attrs/geometry" in msg
    pairs = _geometry(8, 2 * math.pi)  # 8 views a full turn: a and a + pi hold the same rays
    assert "only 4 distinct directions" in data_warnings(_sinogram(pairs), pairs)["views"]
    assert "views" not in data_warnings(y, g)  # 30 different angles: nothing to say


@pytest.mark.parametrize("change, message", [
    (lambda g: {**g, "angles": list(np.degrees(g["angles"]))}, "angles span .* rad, more than two "
                                                                "turns .*were degrees given"),
    (lambda g: {**g, "pixel_size": float("nan")}, "pixel_size must be finite and > 0, got nan"),
    (lambda g: {**g, "angles": [float("nan")] + g["angles"][1:]}, "angle 0 is nan"),
])
def test_geometry_attribute_in_wrong_units_or_nan_is_a_format_error(ct_dir_pipeline, change,
                                                                      message):
    root, run = ct_dir_pipeline
    with h5py.File(root / "observation_test_000.hdf5", "r+") as h5:
        h5.attrs["geometry"] = json.dumps(change(json.loads(h5.attrs["geometry"])))
    entry = run()
    assert entry["status"] == "failed"
    assert "observation_test_000.hdf5" in entry["error"] and "attrs/geometry" in entry["error"]
    assert re.search(message, entry["error"]), entry["error"]


def test_lengths_in_metres_are_refused_naming_the_geometry(ct_dir_pipeline):
    root, run = ct_dir_pipeline
    with h5py.File(root / "observation_test_000.hdf5", "r+") as h5:
        g = json.loads(h5.attrs["geometry"])
        h5.attrs["geometry"] = json.dumps({**g, "pixel_size": g["pixel_size"] / 1000,
                                           "detector_spacing": g["detector_spacing"] / 1000})
    entry = run()
    assert entry["status"] == "failed"
    assert "needs a mean attenuation of" in entry["error"] and "in mm (pixel_size" in entry["error"]


@pytest.fixture
def ct_dir_pipeline(tmp_path):
    """A copy of a simulated LoDoPaB-layout part and a function running ``ct_fbp`` on it."""
    from tests.helpers import simulated_ct_dir
    from tests.robustness.test_hostile_inputs import run_one
    from mrirecon.pipeline.definitions import load_pipeline

    root = simulated_ct_dir(tmp_path / "ct", views=24, size=16, seed=2)
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    return root, lambda: run_one(config, root / "observation_test_000.hdf5", tmp_path / "out")


@pytest.mark.parametrize("photons", [4096.0, 16.0])
def test_a_geometry_off_by_two_is_reported_where_rays_miss_the_image(photons):
    """A detector spacing (or pixel size) off by 2x in the file's geometry gave 10-14 dB images
    with exit 0; the bins whose rays miss the image's circle then read the object, not air."""
    from dataclasses import replace

    true = _geometry(60)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64, dtype=torch.float64),
                            torch.linspace(-1, 1, 64, dtype=torch.float64), indexing="ij")
    body = 0.019 * (xx ** 2 / 0.95 ** 2 + yy ** 2 / 0.8 ** 2 < 1)  # a body filling the image
    y = low_dose_noise(ct_operator(true)(body).float(), photons, torch.Generator().manual_seed(0))
    assert "geometry" not in data_warnings(y, true)
    wide = CTGeometry("parallel", (64, 64), true.angles, num_detectors=181, pixel_size=2.0,
                      detector_spacing=2.0)  # a wider detector: its outer bins read air
    assert "geometry" not in data_warnings(_sinogram(wide, photons), wide)
    for wrong in (replace(true, detector_spacing=4.0), replace(true, pixel_size=1.0)):
        msg = data_warnings(y, wrong)["geometry"]
        assert re.search(r"detector bins whose rays miss the image .* read[s]? a mean line integral", msg)


def test_a_reference_stored_in_another_layout_is_reported():
    """A LoDoPaB ground truth stored as (rows, cols) instead of ODL (x, y) was scored rotated
    (15.0 instead of 28.0 dB) without a word; a correctly stored one raises nothing."""
    from mrirecon.operators.fbp import fbp
    from mrirecon.pipeline.stages_ct import reference_orientation

    g = _geometry(30)
    truth = _phantom(64).float()
    preview = fbp(_sinogram(g, 4096.0), g, filter="hann").float()
    assert reference_orientation(truth, preview) is None
    msg = reference_orientation(torch.rot90(truth, 1, (-2, -1)), preview)
    assert msg is not None and "rotated 270 degrees" in msg
    assert "transposed" in reference_orientation(truth.T, preview)


def test_ct_dose_noise_follows_undersample_seed():
    """``undersample.seed: fixed`` seeds the simulated dose noise by ``fixed_seed`` instead of the
    file name (it was ignored for CT): the same data under two file names get the same noise,
    another ``fixed_seed`` other noise, and ``seed: file`` keeps noise per file."""
    from mrirecon.pipeline.schema import UndersampleConfig
    from mrirecon.pipeline.stages_ct import CTSlice, undersample

    g = _geometry(30, n=32)
    clean = _sinogram(g, photons=None)

    def noisy(name, **seed):
        cfg = UndersampleConfig(enabled=True, photons=1024.0, **seed)
        return undersample(CTSlice(clean, g, file_name=name, index=3), cfg).sinogram

    fixed = dict(seed="fixed", fixed_seed=7)
    assert torch.equal(noisy("a.h5", **fixed), noisy("b.h5", **fixed))
    assert not torch.equal(noisy("a.h5", **fixed), noisy("a.h5", seed="fixed", fixed_seed=8))
    assert not torch.equal(noisy("a.h5"), noisy("b.h5"))
    assert torch.equal(noisy("a.h5"), noisy("a.h5"))
    # the noise is real noise at that dose, not a copy of the clean data
    assert not torch.equal(noisy("a.h5", **fixed), clean)


@pytest.mark.parametrize("data_photons, asked, note", [
    (4096.0, 1024.0, "binomial thinning of the data's Poisson counts at 4096 photons per bin "
                     "(each photon kept with probability 0.25): the dose is exactly 1024"),
    (4096.0, 4096.0, "the data's own dose (4096 photons per bin); the data are used unchanged"),
    (4096.0, 8192.0, None),  # refused: see the error
    (None, 1024.0, "Poisson noise at 1024 photons per bin on noise-free data"),
    ("public", 1024.0, "binomial thinning of the data's Poisson counts at 4096 photons"),
])
def test_dose_on_noisy_data_is_thinned_and_recorded(tmp_path, data_photons, asked, note):
    """``undersample.photons`` on LoDoPaB-like data (already noisy at 4096 photons) used to add
    its noise on top: 1024 asked gave an effective 821 (measured), 4096 gave 2045, first with
    no word, then with a warning giving ``1 / (1/N + 1/X)``. Now noisy data are thinned to the
    dose asked for (no warning; the note the provenance keeps says how), the data's own dose
    keeps them, a higher one is refused naming the file and the setting, and noise-free data
    get Poisson noise at the dose asked for, as before."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.stages_ct import CTStages

    photons = 4096.0 if data_photons == "public" else data_photons
    # public: LoDoPaB's shape (a file without attributes at any other is refused: its geometry
    # was invented from its counts, tests/robustness/test_hostile_lodopab_files.py)
    size, views = (362, 1000) if data_photons == "public" else (32, 30)
    simulate_ct_dataset(tmp_path, geometry="parallel", views=views, photons=photons, size=size,
                        seed=1, samples=1, part="test", sources="phantom")
    path = tmp_path / "observation_test_000.hdf5"
    if data_photons == "public":  # the public files carry none of our attributes
        with h5py.File(path, "r+") as h5:
            for key in list(h5.attrs):
                del h5.attrs[key]
    config = load_pipeline("ct_fbp", ["undersample.enabled=true", f"undersample.photons={asked}"])[0]
    stages = CTStages(config)
    source = stages.load(path)
    read = stages.preprocess(source.read(0))
    if note is None:
        with pytest.raises(ValueError, match=r"observation_test_000\.hdf5: undersample\.photons="
                                             r"8192 is above the dose .* \(4096 photons per bin\)"):
            stages.undersample(read)
        return
    s = stages.undersample(read)
    assert "dose" not in stages.data_messages(s)[0]
    got = stages.data_messages(s)[1].get("dose")
    assert got is not None and note in got, got
    assert torch.equal(s.sinogram, read.sinogram) == (asked == photons)
