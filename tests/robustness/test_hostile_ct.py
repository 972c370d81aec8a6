"""CT inputs that passed every check with exit 0 and a wrong image, reference or record: the data
at another scale, DICOM values not in HU, photon starvation, a ground truth at its own scale,
settings the data cannot honour, and duplicated configuration keys."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import simulated_ct_dir
from mrirecon.core.config import ConfigError, load_yaml
from mrirecon.io.errors import DataFormatError
from mrirecon.io.lodopab import LoDoPaBFiles
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

FAST = ["export.formats=[hdf5]", "report.enabled=false"]


def _phantom_sinogram(size: int = 128, views: int = 60):
    """A water ellipse (0.02 / mm) with a bone ring and a fat layer in air, projected: its
    ``(sinogram, geometry, attenuation)``."""
    from mrirecon.data.simulate_ct import ct_simulation_geometry
    from mrirecon.operators import ct_operator

    g = ct_simulation_geometry("parallel", size, views, None, 200.0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                            torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    r = (xx**2 + (yy / 0.8) ** 2).sqrt()
    mu = 0.02 * ((r < 0.8) * 1.0 + (r > 0.7) * (r < 0.8) * (-0.1) + ((xx - 0.3) ** 2 + yy**2 < 0.01) * 1.5)
    return ct_operator(g)(mu).float(), g, mu


@pytest.mark.parametrize("scale, warned", [(1.0, False), (3.0, True), (0.1, True), (81.35858, True)])
def test_fbp_of_data_at_another_scale_warns(scale, warned):
    """x 3 (p99 2200 HU), x 81.4 (line integrals not divided by LoDoPaB's MU_MAX: 85,000 HU) and
    x 0.1 (an image of air) ran with exit 0 and no word; the bulk of the object reads water."""
    from mrirecon.operators.fbp import fbp
    from mrirecon.pipeline.ct_plausibility import MU_WATER_NOMINAL, bulk_attenuation, image_warnings

    sino, g, _ = _phantom_sinogram()
    preview = fbp(sino * scale, g, filter="hann")
    ratio = bulk_attenuation(preview) / MU_WATER_NOMINAL
    assert ratio == pytest.approx(scale, rel=0.1)  # the mode is the water body, at any scale
    msgs = image_warnings(preview)
    assert ("scale" in msgs) == warned
    assert "no_air" not in msgs
    if warned:
        assert f"{ratio:.3g}x water's attenuation" in msgs["scale"]


def test_fbp_without_air_warns_and_tiny_images_are_not_judged():
    """HU + 1024 stored without its intercept (air at +24 HU) or attenuation labelled HU (every
    voxel near 0 HU) have no air anywhere; a 16 x 16 phantom has too few pixels to judge."""
    from mrirecon.pipeline.ct_plausibility import image_warnings

    _, _, mu = _phantom_sinogram()
    shifted = (mu + 0.02 * 1.024).float()  # every voxel + 1024 HU
    msgs = image_warnings(shifted)
    assert "no_air" in msgs and "0.00% of its pixels" in msgs["no_air"]
    # (its bulk is then the shifted air, 1.02x water: only the missing air tells)
    assert image_warnings(torch.full((16, 16), 0.5)) == {}


def test_starved_rays_are_counted_at_the_count_floor():
    from mrirecon.pipeline.ct_plausibility import STARVED_FRACTION, starved_rays

    floor = math.log(4096 / 0.1)
    sino = torch.rand(100, 50)  # line integrals below the floor
    assert starved_rays(sino, 4096, 0.1) is None
    sino.view(-1)[: int(2 * STARVED_FRACTION * sino.numel())] = floor
    msg = starved_rays(sino, 4096, 0.1)
    assert msg is not None and "1.0% of the rays (50 bins) detected no photon" in msg
    assert starved_rays(sino, None, 0.1) is None  # noise-free data: no floor to count
    sino.view(-1)[: int(0.5 * STARVED_FRACTION * sino.numel())] = floor
    sino.view(-1)[int(0.5 * STARVED_FRACTION * sino.numel()):] = 0.5
    assert starved_rays(sino, 4096, 0.1) is None


def test_starvation_is_reported_by_the_pipeline(tmp_path):
    """Rays set to the file's count floor log(photons / min_photon_count) in a tenth of the
    views: 25-43 % of such bins (a 1 m field of view) gave 16-21 dB images with no word."""
    root = simulated_ct_dir(tmp_path / "src", views=24, size=16, seed=2)
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        data = h5["data"][...]
        floor = math.log(float(h5.attrs["photons"]) / float(h5.attrs.get("min_photon_count", 0.1)))
        data[:, ::10, 5:15] = floor / float(h5.attrs["mu_max_per_m"])  # 3 x 10 of 24 x 23 bins
        h5["data"][...] = data
    config = load_pipeline("ct_fbp", FAST)[0]
    assert run_pipeline(config, [str(obs)], tmp_path / "out", progress=False) == 0
    (entry,) = json.loads((tmp_path / "out" / "provenance.json").read_text())["files"]
    assert any("detected no photon" in w for w in entry["warnings"]), entry["warnings"]


@pytest.fixture
def ct_copy(ct_dir, tmp_path) -> Path:
    root = tmp_path / "ct"
    shutil.copytree(ct_dir, root)
    return root


def test_a_ground_truth_is_read_at_its_own_scale(ct_copy):
    """A ground truth stored / 2 with ``mu_max_per_m`` x 2 (valid by the layout's rule) was read at
    the observation's scale: the reference off by 2x (12.8 instead of 25.2 dB), no word."""
    want = LoDoPaBFiles(ct_copy, "test").attenuation(0).data
    gt = ct_copy / "ground_truth_test_000.hdf5"
    with h5py.File(gt, "r+") as h5:
        h5["data"][...] = h5["data"][...] / 2
        h5.attrs["mu_max_per_m"] = 2 * float(h5.attrs["mu_max_per_m"])
    got = LoDoPaBFiles(ct_copy, "test").attenuation(0).data
    torch.testing.assert_close(got, want, rtol=2 * torch.finfo(torch.float32).eps, atol=0)
    with h5py.File(gt, "r+") as h5:
        h5.attrs["mu_max_per_m"] = 0.0
    with pytest.raises(DataFormatError, match=r"ground_truth_test_000.hdf5: attrs/mu_max_per_m: 0.0 is no MU_MAX"):
        LoDoPaBFiles(ct_copy, "test")


@pytest.mark.parametrize("value", [0.0, -5.0, float("nan"), float("inf")])
def test_a_dose_attribute_that_is_no_dose_is_refused_at_open(ct_copy, value):
    """``photons`` 0 / -5 / NaN was blamed on the user's ``undersample.photons``."""
    with h5py.File(ct_copy / "observation_test_000.hdf5", "r+") as h5:
        h5.attrs["photons"] = value
    with pytest.raises(DataFormatError, match=r"observation_test_000.hdf5: attrs/photons: .* is no dose"):
        LoDoPaBFiles(ct_copy, "test")


def test_library_calls_with_a_float_index_or_a_pattern_part_name(ct_copy):
    files = LoDoPaBFiles(ct_copy, "test")
    torch.testing.assert_close(files.sinogram(np.int64(1)).data, files.sinogram(1).data)
    with pytest.raises(TypeError, match="a sample index must be an integer, got 1.0"):
        files.sinogram(1.0)  # was "data: corrupt or unreadable" about a healthy file
    with pytest.raises(FileNotFoundError, match=r"no observation_t\*_###.hdf5 files"):
        LoDoPaBFiles(ct_copy, "t*")  # a name, not a pattern (it matched test and train alike)


def test_fbp_refuses_half_precision_by_name():
    from mrirecon.operators.fbp import fbp

    sino, g, _ = _phantom_sinogram(32, 12)
    with pytest.raises(TypeError, match=r"float32/float64 or complex, got torch.float16 \(convert"):
        fbp(sino.half(), g)


def test_dicom_input_is_projected_at_the_views_kept(dicom_series, tmp_path):
    """``undersample.enabled: false`` projected a DICOM series at ``undersample.views`` (30 for
    ct_tv) all the same; the LoDoPaB path kept every view."""
    from mrirecon.pipeline.stages_ct import CTStages

    dicom_series(tmp_path / "s", "CT")
    views = {}
    for enabled in (False, True):
        config = load_pipeline("ct_tv", [f"undersample.enabled={str(enabled).lower()}", *FAST])[0]
        source = CTStages(config).load(tmp_path / "s")
        views[enabled] = source.read(0).geometry.num_views
    assert views == {False: 360, True: 30}


def test_a_projected_dicom_series_says_its_metrics_score_a_round_trip(dicom_series, tmp_path):
    """A CT DICOM series through ct_fbp scored 34-39 dB PSNR against its own images, projected
    noise-free at 360 views, with no note or warning: the figures of a round trip read as a
    reconstruction's."""
    dicom_series(tmp_path / "s", "CT")
    said = {}
    for enabled in (False, True):
        out = tmp_path / f"out{enabled}"
        config = load_pipeline("ct_fbp", [f"undersample.enabled={str(enabled).lower()}",
                                          "undersample.views=30", "undersample.photons=4096",
                                          *FAST])[0]
        assert run_pipeline(config, [str(tmp_path / "s")], out, progress=False) == 0
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        said[enabled] = entry
    off = [w for w in said[False]["warnings"] if "projected from the series' images" in w]
    assert len(off) == 1 and "360 views, no noise" in off[0] and "undersample.enabled=true" in off[0]
    on = [n for n in said[True]["notes"] if "projected from the series' images" in n]
    assert len(on) == 1 and "30 views, Poisson noise at 4096 photons per bin" in on[0]
    assert not any("projected" in w for w in said[True]["warnings"])


def test_more_views_asked_than_held_is_noted(ct_dir, tmp_path):
    config = load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.views=1000", *FAST])[0]
    assert run_pipeline(config, [str(ct_dir / "observation_test_000.hdf5")], tmp_path, progress=False) == 0
    (entry,) = json.loads((tmp_path / "provenance.json").read_text())["files"]
    assert any("undersample.views=1000: the data hold 24 views, fewer, so all 24 were kept" in n
               for n in entry["notes"]), entry["notes"]


def test_rescale_type_is_read_from_every_slice(dicom_series, tmp_path):
    """One slice in US beside HU ones was read as HU when it was not the first."""
    import pydicom

    from mrirecon.io import read_dicom_series

    paths = dicom_series(tmp_path / "s", "CT")
    ds = pydicom.dcmread(paths[1])
    ds.RescaleType = "US"
    ds.save_as(paths[1])
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: RescaleType: is 'US', .* has 'HU'"):
        read_dicom_series(tmp_path / "s")


@pytest.mark.parametrize("text, line", [
    ("name: x\nundersample: {views: 30}\nundersample: {views: 60}\n", 2),
    ("t:\n  30: {lam: 1}\n  30.0: {lam: 2}\n", 2),
])
def test_a_key_given_twice_is_refused_with_its_lines(text, line):
    with pytest.raises(Exception, match=rf"twice \(first on line {line}\)"):
        load_yaml(text)


def test_a_pipeline_file_with_a_key_twice_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text((Path(__file__).parents[2] / "pipelines" / "ct_fbp.yaml").read_text()
                    + "\nevaluate: {enabled: false}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml.*found the key 'evaluate' twice"):
        load_pipeline(str(path), [])


def test_table_keys_naming_one_view_count_are_refused():
    """'30' (a string key) and 30 were merged into one entry without a word."""
    with pytest.raises(ConfigError, match=r"reconstruct.params_by_views: the keys .* name the same views \(30\)"):
        load_pipeline("ct_tv", ["reconstruct.params_by_views={'30': {lam: 1.0}, 30: {lam: 2.0}}"])


def _fan(angles):
    from mrirecon.operators.ct_geometry import CTGeometry

    return CTGeometry("fan", (64, 64), tuple(angles), 96, pixel_size=2.0, detector_spacing=2.0,
                      source_isocenter=300.0, source_detector=500.0)


def test_views_that_do_not_cover_what_the_image_needs_warn():
    """A 0-90° parallel scan (13 dB) and a 180° fan scan (Parker weights for views that do not
    exist: the object's mean 16 % low) ran with exit 0 and no word; sparse views, a missing view,
    a proper short scan and a full turn are no warning."""
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.pipeline.ct_plausibility import coverage_warning

    def parallel(angles):
        return CTGeometry("parallel", (64, 64), tuple(angles), 96)

    msg = coverage_warning(parallel(np.linspace(0, np.pi / 2, 45, endpoint=False)))
    assert msg is not None and "gap of 92° in their directions (from 88° to 180°" in msg
    assert coverage_warning(parallel(np.linspace(0, np.pi, 30, endpoint=False))) is None
    assert coverage_warning(parallel(np.delete(np.linspace(0, np.pi, 90, endpoint=False), 40))) is None
    assert coverage_warning(parallel(np.linspace(0, 2 * np.pi, 60, endpoint=False))) is None
    # fan: the image's circumscribed radius 90.5 mm at 300 mm subtends 2 asin(0.302) = 35.1°,
    # wider than the detector's fan, 2 atan(96 / 500) = 21.7°: no scan measures rays beyond it
    fan = 2 * np.degrees(np.arctan(96.0 / 500.0))
    step = np.pi / 180
    msg = coverage_warning(_fan(np.arange(0, np.pi, step)))
    assert msg is not None and f"the {fan:.0f}° fan angle of the detector ({180 + fan:.0f}°)" in msg
    assert coverage_warning(_fan(np.arange(0, np.pi + np.radians(fan), step))) is None
    assert coverage_warning(_fan(np.arange(0, 2 * np.pi, step))) is None


def test_a_stored_geometry_states_every_length(ct_copy):
    """A geometry attribute without pixel_size or detector_spacing took the dataclass's 1.0 mm
    (4.0 dB, a NIfTI of 1 mm voxels for 4.06 mm, exit 0)."""
    obs = ct_copy / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        geometry = json.loads(h5.attrs["geometry"])
        del geometry["pixel_size"]
        h5.attrs["geometry"] = json.dumps(geometry)
    with pytest.raises(DataFormatError, match=r"attrs/geometry: not a valid CT geometry \(missing "
                                              r"pixel_size \(every length in mm is stated"):
        LoDoPaBFiles(ct_copy, "test")


def _water_phantom_at(pixel: float, size: int = 129, views: int = 90):
    """The :func:`_phantom_sinogram` object on ``size`` pixels of ``pixel`` mm: its geometry and
    its line integrals (lengths in mm)."""
    from mrirecon.operators import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    _, _, mu = _phantom_sinogram(size)
    g = CTGeometry("parallel", (size, size), tuple(np.arange(views) * math.pi / views),
                   int(math.ceil(size * math.sqrt(2))) | 1, pixel, pixel)
    return g, ct_operator(g)(mu).float()


@pytest.mark.parametrize("pixel", [0.5, 0.6, 0.7, 1.4])
def test_line_integrals_in_pixel_units_are_named(pixel):
    """skimage's radon and ASTRA's default volume geometry count lengths in pixels: with 0.7 mm
    pixels water read +430 HU (0.6 mm: +669 HU), inside the bulk band, exported with no word;
    the warning says what to do. The same data in mm stay silent at every pixel size."""
    from mrirecon.operators.fbp import fbp
    from mrirecon.pipeline.ct_plausibility import MU_WATER_NOMINAL, bulk_attenuation, image_warnings

    g, sino_mm = _water_phantom_at(pixel)
    assert image_warnings(fbp(sino_mm, g, filter="hann"), g.pixel_size) == {}
    preview = fbp(sino_mm / pixel, g, filter="hann")  # lengths counted in pixels
    ratio = bulk_attenuation(preview) / MU_WATER_NOMINAL
    assert ratio == pytest.approx(1 / pixel, rel=0.05)
    msg = image_warnings(preview, g.pixel_size)["scale"]
    assert "pixel units" in msg
    assert f"Multiply the sinogram by the pixel size in mm ({pixel:.4g})" in msg
    assert f"{ratio:.3g}x water's attenuation" in msg


def test_pixel_units_are_not_judged_near_1_mm_or_inside_soft_tissue():
    """A pixel within 10 % of 1 mm makes both readings alike; a bulk in the soft-tissue band
    (correct data: 0.89-1.07x) is never called pixel units, whatever the pixel."""
    from mrirecon.pipeline.ct_plausibility import pixel_units_warning

    assert pixel_units_warning(1 / 0.95, 0.95) is None
    assert pixel_units_warning(1.05, 0.92) is None  # 0.966x water once multiplied: still tissue
    assert pixel_units_warning(1.43, None) is None
    assert pixel_units_warning(1.43, 0.7) is not None
    assert pixel_units_warning(1.43, 0.5) is None  # 0.715x: a scale, not pixel units


def test_a_run_on_line_integrals_in_pixel_units_warns(tmp_path):
    """Through `mrirecon run ct_fbp`: a sinogram in pixel units (0.7 mm pixels) written with
    write_lodopab exported water at +430 HU without a word (the check lived in
    ct_plausibility, but the pipeline passed it no pixel size)."""
    from mrirecon.io.lodopab import write_lodopab

    g, sino_mm = _water_phantom_at(0.7)
    write_lodopab(tmp_path / "in", "test", (sino_mm / 0.7).numpy()[None], geometry=g)
    config = load_pipeline("ct_fbp", list(FAST))[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(tmp_path / "in" / "observation_test_000.hdf5")], out,
                        progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert any("pixel units" in w and "pixel size in mm (0.7)" in w for w in entry["warnings"]), \
        entry["warnings"]


def _water_body(ratio: float, n: int = 256, seed: int = 0) -> torch.Tensor:
    """An FBP-like image: an elliptic water body at ``ratio`` x the nominal 0.02 / mm, in air,
    with noise."""
    r, c = np.mgrid[:n, :n]
    body = np.hypot(r - n / 2, (c - n / 2) * 1.3) < 100
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.where(body, 0.02 * ratio, 0.0) + rng.normal(0, 0.0005, (n, n)))


@pytest.mark.parametrize("ratio, pixel", [(1.2, 0.8), (1.3, 0.75), (1.35, 0.7), (0.82, 1.2)])
def test_low_kv_water_with_sub_mm_pixels_is_not_called_pixel_units(ratio, pixel):
    """Water reads 0.85-1.35x the nominal 0.02 / mm from 120 to 70 kVp: a paediatric 80 kVp scan
    (1.2x, 0.8 mm pixels) or a 70 kVp one (1.3x at 0.75 mm, 1.35x at 0.7 mm) was told to multiply
    its sinogram by the pixel size (its water then 0.95x too low). Without a stated water
    attenuation, such a bulk stays silent; a file that states its own water is judged by it."""
    from mrirecon.pipeline.ct_plausibility import image_warnings

    img = _water_body(ratio)
    assert image_warnings(img, pixel) == {}
    # the file states its water (what its HU conversion uses): the same bulk is its water
    assert image_warnings(img, pixel, mu_water=0.02 * ratio) == {}
    # ... or states LoDoPaB's 0.02: then the bulk is 1.2-1.35x the file's own water, and
    # bulk x pixel within 10 % of it names pixel units
    msg = image_warnings(img, pixel, mu_water=0.02).get("scale", "")
    assert "pixel units" in msg, msg


def test_pixel_units_are_judged_against_the_stated_water():
    """A 70 kVp file stating water at 0.027 / mm whose data are in pixel units (0.7 mm): bulk
    1.93x nominal (outside the low-kV band, but 1.35x x 0.7 = 0.95x nominal would not tell), 1.43x
    the stated water and 1.0x once multiplied by the pixel: named."""
    from mrirecon.pipeline.ct_plausibility import image_warnings, pixel_units_warning

    assert pixel_units_warning(1.43, 0.7, stated=True) is not None
    assert pixel_units_warning(1.3, 0.75, stated=True) is not None
    assert pixel_units_warning(1.3, 0.75) is None  # low-kV water, nothing stated
    assert pixel_units_warning(0.83, 1.2) is None  # 120 kVp water at 1.2 mm, nothing stated
    assert pixel_units_warning(0.71, 1.4) is not None
    msg = image_warnings(_water_body(0.027 / 0.02 / 0.7), 0.7, mu_water=0.027)["scale"]
    assert "pixel units" in msg and "0.027 / mm" in msg, msg


def test_a_low_kv_file_stating_its_water_runs_silent(tmp_path):
    """Through `mrirecon run ct_fbp`: water at 0.027 / mm (70 kVp) on 0.75 mm pixels, written
    with write_lodopab(mu_water=0.027): bulk 1.35x nominal, x 0.75 = 1.01: was told "are the
    line integrals in pixel units?"; the file's own mu_water_per_mm now judges it."""
    from mrirecon.io.lodopab import write_lodopab
    from mrirecon.operators import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    _, _, mu = _phantom_sinogram(129)
    mu = mu * (0.027 / 0.02)
    g = CTGeometry("parallel", (129, 129), tuple(np.arange(90) * math.pi / 90), 183, 0.75, 0.75)
    write_lodopab(tmp_path / "in", "test", ct_operator(g)(mu).float().numpy()[None], geometry=g,
                  mu_water=0.027)
    config = load_pipeline("ct_fbp", list(FAST))[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(tmp_path / "in" / "observation_test_000.hdf5")], out,
                        progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert not any("pixel units" in w for w in entry["warnings"]), entry["warnings"]


@pytest.mark.parametrize("scale", [1 / math.log(10), 0.1, 3.0])
def test_line_integrals_of_a_base_10_log_are_named(scale):
    """``-log10(I / I0)`` stored as line integrals (every one x 0.434): water's bulk reads 0.43x,
    warned as another scale without naming the base-10 log, the one cause that fits 0.434 (the
    fix: multiply by ln 10); the other scales' warnings do not name it."""
    from mrirecon.operators.fbp import fbp
    from mrirecon.pipeline.ct_plausibility import image_warnings

    sino, g, _ = _phantom_sinogram()
    msg = image_warnings(fbp(sino * scale, g, filter="hann"))["scale"]
    assert ("log taken in base 10" in msg) == (scale < 0.5 and scale > 0.4), msg
    if "base 10" in msg:
        assert "multiply the sinogram by ln 10 = 2.303" in msg and msg.endswith("HU would be wrong")
