"""Settings the config alone cannot show to be inert, because the data decide (the config-only
cases are ``pipeline/inert.py``'s, ``test_hostile_inert_settings.py``): each gave a
byte-identical output with exit 0 and no word, ``provenance.json`` recording it as applied.
Now a note per input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

FAST = ["export.formats=[hdf5]", "report.enabled=false", "evaluate.enabled=false"]


def _run(path: Path, out: Path, pipeline: str, sets: list[str]) -> tuple[np.ndarray, list[str]]:
    config = load_pipeline(pipeline, [*FAST, *sets])[0]
    assert run_pipeline(config, [str(path)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    (image,) = (out / "reconstructions").glob("*.h5")
    with h5py.File(image) as f:
        return f["reconstruction"][()], [*entry.get("warnings", []), *entry.get("notes", [])]


def test_a_calib_width_beyond_the_data_is_noted(mri_file, tmp_path):
    """32 readout rows and a narrower centre band: ESPIRiT calibrates on all 32 rows whatever
    calib_width beyond 32 asks for (64 and 500 gave the same image)."""
    sets = ["reconstruct.params.iterations=5", "undersample.center_fractions=[0.2]"]
    wide, said = _run(mri_file, tmp_path / "a", "mri_retrospective", [*sets, "calibrate.calib_width=500"])
    edge, plain = _run(mri_file, tmp_path / "b", "mri_retrospective", [*sets, "calibrate.calib_width=32"])
    np.testing.assert_array_equal(wide, edge)  # inert indeed
    (note,) = [m for m in said if "calibrate.calib_width=500" in m]
    assert "ESPIRiT calibrated on the whole 32 x" in note and "of 32 or more gives this image" in note
    assert not [m for m in plain if "calib_width" in m]  # 32 is used to the row


def test_max_cropped_energy_on_non_cartesian_data_is_noted(tmp_path):
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    (path,) = simulate_noncartesian_dataset(tmp_path / "sim", "radial", volumes=1, slices=1,
                                            coils=4, size=(32, 32), seed=3)
    sets = ["reconstruct.params.iterations=3", "calibrate.crop=0.99"]
    kept, said = _run(Path(path), tmp_path / "a", "mri_radial_cs",
                      [*sets, "calibrate.max_cropped_energy=0.0"])
    plain, quiet = _run(Path(path), tmp_path / "b", "mri_radial_cs", sets)
    np.testing.assert_array_equal(kept, plain)  # inert indeed
    (note,) = [m for m in said if "max_cropped_energy" in m]
    assert "calibrate.max_cropped_energy=0.0: has no effect on non-Cartesian data" in note
    assert not [m for m in quiet if "max_cropped_energy" in m]  # the default: no word


@pytest.mark.parametrize("value", ["true", "false"])
def test_fbp_short_scan_on_parallel_beam_data_is_noted(ct_dir, tmp_path, value):
    src = ct_dir / "observation_test_000.hdf5"
    asked, said = _run(src, tmp_path / "a", "ct_fbp", [f"reconstruct.params.short_scan={value}"])
    plain, quiet = _run(src, tmp_path / "b", "ct_fbp", [])
    np.testing.assert_array_equal(asked, plain)  # inert indeed
    (note,) = [m for m in said if "short_scan" in m]
    assert f"reconstruct.params.short_scan={value.capitalize()}: has no effect on parallel-beam" in note
    assert not [m for m in quiet if "short_scan" in m]


def test_a_method_without_coil_maps_is_not_failed_by_their_calibration(mri_file, tmp_path):
    """24 columns at 4x (centre fraction 0.08) keep a 2-column band, too narrow for ESPIRiT:
    zero-filled RSS, which uses no coil maps, failed the input with ESPIRiT's "needs a fully
    sampled centre band of at least 3 columns". The maps are no longer made for a classical
    method that uses none (zero-filled RSS, GRAPPA): the image is the one without calibration."""
    sets = ["reconstruct.method=zero_filled_rss", "reconstruct.params_by_acceleration={}"]
    image, _ = _run(mri_file, tmp_path / "a", "mri_retrospective", sets)
    bare, _ = _run(mri_file, tmp_path / "b", "mri_retrospective", [*sets, "calibrate.method=none"])
    np.testing.assert_array_equal(image, bare)


@pytest.mark.parametrize("setting, said", [
    ("preprocess.prewhiten=false", "preprocess.prewhiten=false: the file holds no noise scan"),
    ("load.include_calibration=false", "load.include_calibration=false: the file holds no "
                                       "calibration lines (fastMRI files have no acquisition flags)"),
    ("preprocess.partial_fourier=none", "preprocess.partial_fourier=none: the slice has no "
                                        "never-sampled side"),
    ("preprocess.remove_oversampling=false", "preprocess.remove_oversampling=false: the default "
                                             "gives the same image: the data have no readout"),
])
def test_preprocess_and_load_settings_the_file_leaves_inert_are_noted(mri_file, tmp_path, setting,
                                                                      said):
    """A fastMRI file without a noise scan, calibration flags, partial Fourier or readout
    oversampling: each setting gave the default's image, byte for byte, with no word."""
    sets = ["reconstruct.params.iterations=3", "undersample.center_fractions=[0.2]"]
    asked, messages = _run(mri_file, tmp_path / "a", "mri_retrospective", [*sets, setting])
    plain, quiet = _run(mri_file, tmp_path / "b", "mri_retrospective", sets)
    np.testing.assert_array_equal(asked, plain)  # inert indeed
    key = setting.split("=")[0].split(".")[-1]
    assert [m for m in messages if said in m], messages
    assert not [m for m in quiet if key in m]  # the default: no word


def test_remove_oversampling_where_it_acts_is_not_noted(tmp_path):
    """2x readout oversampling: `false` on a classical method keeps the 64 rows (another image),
    `true` crops them; neither is inert, so neither is noted."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=1, coils=2, size=(32, 24),
                                   seed=5, resolution=2, readout_oversampling=2)
    sets = ["reconstruct.params.iterations=3", "undersample.center_fractions=[0.2]"]
    kept, said_kept = _run(Path(path), tmp_path / "a", "mri_retrospective",
                           [*sets, "preprocess.remove_oversampling=false"])
    cut, said_cut = _run(Path(path), tmp_path / "b", "mri_retrospective",
                         [*sets, "preprocess.remove_oversampling=true"])
    assert not np.array_equal(kept, cut)
    assert not [m for m in said_kept + said_cut if "remove_oversampling" in m]


def test_include_calibration_on_ismrmrd_without_calibration_lines_is_noted(tmp_path):
    from mrirecon.io import read_ismrmrd
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    (path,) = simulate_noncartesian_dataset(tmp_path / "sim", "radial", volumes=1, slices=1,
                                            coils=2, size=(32, 32), seed=3)
    assert read_ismrmrd(path).header.extra["calibration_lines"] == 0
    sets = ["reconstruct.params.iterations=3"]
    asked, said = _run(Path(path), tmp_path / "a", "mri_radial_cs",
                       [*sets, "load.include_calibration=false"])
    plain, _ = _run(Path(path), tmp_path / "b", "mri_radial_cs", sets)
    np.testing.assert_array_equal(asked, plain)
    assert [m for m in said if "load.include_calibration=false: the file holds no calibration "
                               "lines (ISMRMRD calibration-only ACQ_IS_PARALLEL_CALIBRATION)" in m], said
