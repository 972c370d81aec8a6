"""fastMRI releases beyond knee and brain through the fastMRI reader (audit c6): prostate DWI's
EPI with ramp sampling was read as Cartesian k-space with exit 0 (the ISMRMRD reader refuses the
same header), prostate's 5-D k-space (averages first) was refused without a word of what to do,
and ``calibration_data`` / ``coil_sens_maps`` were passed over silently while a prostate slice
without a fully sampled centre failed in calibration with advice that could not work."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mrirecon.io.errors import DataFormatError
from mrirecon.io.fastmri import FastMRIFile, write_fastmri
from tests.helpers import ismrmrd_xml

NX, NY, COILS = 32, 24, 2


def _kspace(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def _raw(path, xml: str, **datasets):
    with h5py.File(path, "w") as f:
        f.create_dataset("ismrmrd_header", data=xml.encode())
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("ramps", [(100, 100), (100, 0)])
def test_epi_with_ramp_sampling_is_refused_by_reader_and_writer(tmp_path, ramps):
    xml = ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=200.0, trajectory="epi", ramps=ramps)
    path = _raw(tmp_path / "dwi.h5", xml, kspace=_kspace((1, COILS, NX, NY)))
    with pytest.raises(DataFormatError) as err:
        FastMRIFile(path).header
    message = str(err.value)
    assert message.startswith(f"{path}: ismrmrd_header/encoding/trajectory: 'epi' with ramp "
                              "sampling (trajectoryDescription rampUpTime 100"), message
    assert "trapezoidal_regridding" in message and "'cartesian'" in message
    with pytest.raises(ValueError, match="'epi' with ramp sampling"):
        write_fastmri(tmp_path / "w.h5", _kspace((1, COILS, NX, NY)), xml)


def test_flat_top_epi_and_cartesian_headers_are_read(tmp_path):
    for name, kw in (("flat", {"trajectory": "epi", "ramps": (0, 0)}), ("cart", {})):
        xml = ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=200.0, **kw)
        path = _raw(tmp_path / f"{name}.h5", xml, kspace=_kspace((1, COILS, NX, NY)))
        assert FastMRIFile(path).header.encoded_matrix[:2] == (NX, NY)


def test_five_dimensional_prostate_kspace_says_what_to_do(tmp_path):
    xml = ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=200.0)
    path = _raw(tmp_path / "t2.h5", xml, kspace=_kspace((3, 2, COILS, NX, NY)))
    with pytest.raises(DataFormatError) as err:
        FastMRIFile(path).header
    message = str(err.value)
    assert f"{path}: kspace: expected (slices, coils, H, W) or (slices, H, W), got shape " \
           f"(3, 2, {COILS}, {NX}, {NY}); 5-D k-space with a leading axis of averages" in message
    assert "mrirecon.io.write_fastmri" in message


def test_calibration_data_and_stored_maps_are_named_not_passed_over(tmp_path):
    xml = ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=200.0)
    k = _kspace((1, COILS, NX, NY))
    path = _raw(tmp_path / "p.h5", xml, kspace=k, calibration_data=k,
                coil_sens_maps=np.ones((1, COILS, NX, NY), np.complex64))
    note = FastMRIFile(path).header.extra["unread_datasets_note"]
    assert note.startswith("the file holds calibration_data (a separate reference scan (fastMRI "
                           "prostate)), coil_sens_maps (stored coil sensitivities), which the "
                           "fastMRI reader does not use"), note
    plain = _raw(tmp_path / "q.h5", xml, kspace=k)
    assert "unread_datasets_note" not in FastMRIFile(plain).header.extra


def test_the_run_warns_of_the_unread_calibration_data(tmp_path):
    """The note reaches `mrirecon run`'s warnings (every header note ending in ``_note`` does)."""
    import json

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    xml = ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=200.0)
    k = _kspace((1, COILS, NX, NY))
    path = _raw(tmp_path / "p.h5", xml, kspace=k, calibration_data=k)
    config = load_pipeline("mri_cs", ["report.enabled=false", "export.formats=[hdf5]",
                                      "reconstruct.method=zero_filled_rss", "reconstruct.params={}",
                                      "reconstruct.params_by_acceleration={}"])[0]
    assert run_pipeline(config, [str(path)], tmp_path / "o", progress=False) == 0
    (f,) = json.loads((tmp_path / "o" / "provenance.json").read_text())["files"]
    assert any("calibration_data (a separate reference scan (fastMRI prostate))" in w
               for w in f["warnings"]), f["warnings"]
