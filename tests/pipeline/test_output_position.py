"""Where the exported voxels lie: a point at the centre of an ISMRMRD acquisition's field of view
(constant k-space: the centred FFT puts it on the encoded grid's voxel ``N // 2``) must come out
at the acquisition's ``position`` in the NIfTI geometry, whichever path the readout took. With an
even readout (``N`` = 30) and an odd recon matrix (``R`` = 15), the recon grid, fastMRI's centre
crop of the encoded grid, has that voxel at row 8, not ``R // 2`` = 7: the pipeline placed it one
row off on one of its two paths (``preprocess.remove_oversampling`` true or false)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrirecon.containers import Header
from mrirecon.io import read_ismrmrd
from mrirecon.io.nifti import read_nifti
from tests.robustness.test_hostile_inputs import mri_config, run_one

ismrmrd = pytest.importorskip("ismrmrd")
X = ismrmrd.xsd

ENC_X, RECON_X, LINES, VOXEL = 30, 15, 12, 2.0
POSITION = (3.0, -7.0, 11.0)  # LPS mm, the acquisition's field-of-view centre
READ, PHASE, NORMAL = (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def _point_at_centre(path: Path, enc_x: int = ENC_X, recon_x: int = RECON_X, lines: int = LINES,
                     recon_lines: int = LINES, along_phase: tuple[float, ...] = (0.0,),
                     recon_fov_x: float | None = None) -> Path:
    """Points ``along_phase`` mm from ``POSITION`` along the phase direction (0: the FOV
    centre, constant k-space), amplitudes 1, 0.7, ...; both encoding spaces span
    ``VOXEL x lines`` mm along phase (``recon_lines`` > ``lines``: an interpolated matrix)."""
    def space(x, y, fov_x=None):
        return X.encodingSpaceType(matrixSize=X.matrixSizeType(x=x, y=y, z=1),
                                   fieldOfView_mm=X.fieldOfViewMm(x=fov_x or VOXEL * x,
                                                                  y=VOXEL * lines, z=5.0))

    xml = X.ToXML(X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=2),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=space(enc_x, lines), reconSpace=space(recon_x, recon_lines, recon_fov_x),
            encodingLimits=X.encodingLimitsType(
                kspace_encoding_step_1=X.limitType(minimum=0, maximum=lines - 1,
                                                   center=lines // 2)),
            trajectory=X.trajectoryType.CARTESIAN)]))
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for line in range(lines):
            k = (line - lines // 2) / (VOXEL * lines)  # cycles / mm along phase
            value = sum((1 - 0.3 * i) * np.exp(-2j * np.pi * k * d)
                        for i, d in enumerate(along_phase))
            acq = ismrmrd.Acquisition.from_array(
                np.full((2, enc_x), value, np.complex64), center_sample=enc_x // 2,
                read_dir=READ, phase_dir=PHASE, slice_dir=NORMAL, position=POSITION)
            acq.idx.kspace_encode_step_1 = line
            ds.append_acquisition(acq)
    return path


@pytest.mark.parametrize("enc_x, recon_x, centre", [(30, 15, 8), (30, 16, 8), (31, 15, 7),
                                                    (31, 16, 8), (16, 16, 8)])
def test_fov_centre_is_the_encoded_centre_voxel_on_the_cropped_grid(enc_x, recon_x, centre):
    header = Header(encoded_matrix=(enc_x, LINES, 1), recon_matrix=(recon_x, LINES, 1))
    assert header.fov_centre == (centre, LINES // 2)


@pytest.mark.parametrize("remove", ["true", "false"])
@pytest.mark.parametrize("crop", [[], ["postprocess.crop=fixed", "postprocess.crop_size=[8, 12]"]])
def test_a_point_at_the_fov_centre_is_exported_at_the_acquisition_position(tmp_path, remove,
                                                                            crop):
    src = _point_at_centre(tmp_path / "point.h5")
    config = mri_config("export.formats=[nifti]", "undersample.enabled=false",
                        f"preprocess.remove_oversampling={remove}", *crop)
    entry = run_one(config, src, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    (nii,) = (tmp_path / "out").rglob("*.nii*")
    image = read_nifti(nii)
    data = image.data.abs().numpy()
    s, r, c = np.unravel_index(int(np.argmax(data)), data.shape)
    assert data[s, r, c] > 2 * np.partition(data.ravel(), -2)[-2]  # one point, no tie
    g = image.geometry
    found = (np.asarray(g.slice_position(s)) + r * g.spacing[1] * np.asarray(g.column_direction)
             + c * g.spacing[2] * np.asarray(g.row_direction))
    # float32 positions and NIfTI's float32 affine: rounding of a few 1e-6 mm
    np.testing.assert_allclose(found, POSITION, atol=1e-3)


def test_the_reader_places_the_recon_grid_so(tmp_path):
    """``read_ismrmrd``'s origin is ``position`` minus the centre voxel's rows along the
    readout (8 voxels of 2 mm; it subtracted ``R // 2`` = 7)."""
    ks = read_ismrmrd(_point_at_centre(tmp_path / "point.h5"))
    g = ks.header.geometry
    expected = np.asarray(POSITION) - 8 * VOXEL * np.asarray(READ) \
        - (LINES // 2) * VOXEL * np.asarray(PHASE)
    np.testing.assert_allclose(g.origin, expected, atol=1e-4)


@pytest.mark.parametrize("enc_x, recon_x, recon_fov_x", [(30, 15, None), (32, 16, None),
                                                        (31, 15, None), (32, 32, 66.0)])
def test_the_reader_s_own_readout_crop_keeps_the_position(tmp_path, enc_x, recon_x, recon_fov_x):
    """``read_ismrmrd(crop_readout_oversampling=True)`` placed its geometry with the cropped
    header, whose centre voxel ``n // 2`` is not where the crop put the FOV centre for an even
    ``N`` cropped to an odd ``n`` (1 row, 2 mm, off). A recon FOV a little wider than the
    encoded one (66 mm over 64: nothing to crop) keeps the uncropped placement."""
    from mrirecon.functional import ifft2c

    path = _point_at_centre(tmp_path / "point.h5", enc_x=enc_x, recon_x=recon_x,
                            recon_fov_x=recon_fov_x)
    for crop in (False, True):
        ks = read_ismrmrd(path, crop_readout_oversampling=crop)
        image = ifft2c(ks.data[0]).abs().sum(0).numpy()
        r, c = np.unravel_index(int(np.argmax(image)), image.shape)
        r -= (image.shape[0] - recon_x) // 2  # onto the recon grid, as the pipeline crops
        g = ks.header.geometry
        found = np.asarray(g.origin) + r * g.spacing[1] * np.asarray(g.column_direction) \
            + c * g.spacing[2] * np.asarray(g.row_direction)
        np.testing.assert_allclose(found, POSITION, atol=1e-4)


@pytest.mark.parametrize("lines, recon_lines", [(24, 32), (23, 32), (24, 31)])
def test_an_interpolated_phase_matrix_is_zero_padded_and_placed(tmp_path, lines, recon_lines):
    """reconSpace y finer than encodedSpace y over the same FOV (Siemens' phase resolution
    below 100 %): the image was made on the acquired columns and labelled with the recon voxel
    (2.25 mm for 3 mm columns: points +-18 mm off centre exported at +-13.5 mm). Now the
    k-space is zero-padded to the recon columns, as the scanner interpolates, and noted."""
    offsets = (18.0, -12.0)  # mm along phase, whole acquired voxels (VOXEL * 24 / 32 = 1.5 mm)
    src = _point_at_centre(tmp_path / "interp.h5", lines=lines, recon_lines=recon_lines,
                           along_phase=offsets)
    ks = read_ismrmrd(src)
    assert ks.data.shape[-1] == recon_lines and ks.header.encoded_matrix[1] == recon_lines
    assert "phase_interpolation_note" in ks.header.extra
    assert ks.header.geometry.spacing[2] == pytest.approx(VOXEL * lines / recon_lines)
    config = mri_config("export.formats=[nifti]", "undersample.enabled=false")
    entry = run_one(config, src, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    assert any("interpolated phase matrix" in w for w in entry.get("warnings", [])), entry
    image = read_nifti(next((tmp_path / "out").rglob("*.nii*")))
    data = image.data.abs().numpy()[0]
    assert data.shape[-1] == recon_lines
    g = image.geometry
    for offset, amplitude in zip(offsets, (1.0, 0.7)):
        # the image voxel nearest the point: interpolation spreads it over a few columns
        expected = np.asarray(POSITION) + offset * np.asarray(PHASE)
        col = (expected - np.asarray(g.origin)) @ np.asarray(g.row_direction) / g.spacing[2]
        row = (expected - np.asarray(g.origin)) @ np.asarray(g.column_direction) / g.spacing[1]
        r, c = np.unravel_index(int(np.argmax(np.where(
            np.abs(np.arange(data.shape[1]) - col) < 3, data, 0))), data.shape)
        a, b, d = data[r, c - 1: c + 2]  # the peak to a fraction of a voxel (parabola)
        found = c + 0.5 * (a - d) / (a - 2 * b + d)
        # the parabola's bias on a sampled Dirichlet kernel stays below 0.2 voxel; the old
        # label missed by 25 % of the offset (3-4 voxels here)
        assert r == pytest.approx(row) and abs(found - col) < 0.2, (r, found, row, col)


def test_a_fixed_crop_takes_the_same_pixels_on_both_readout_paths(tmp_path):
    """``crop: fixed`` inside the recon grid: an image still ``N`` rows was cropped around its
    own centre, one cut to the ``R`` recon rows around that, one row apart for an even ``N`` and
    odd ``R`` (62 / 31 here), so the two paths wrote different pixels (each placed right). Now
    both crop the recon grid: the same pixels in the same place."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (src,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=1, coils=2, size=(31, 32),
                                  seed=0, resolution=2, readout_oversampling=2)
    images, origins = [], []
    for remove in ("true", "false"):
        config = mri_config("export.formats=[nifti]", "undersample.enabled=false",
                            f"preprocess.remove_oversampling={remove}",
                            "postprocess.crop=fixed", "postprocess.crop_size=[20, 32]")
        entry = run_one(config, Path(src), tmp_path / remove)
        assert entry["status"] == "ok", entry.get("error")
        image = read_nifti(next((tmp_path / remove).rglob("*.nii*")))
        images.append(image.data.numpy())
        origins.append(np.asarray(image.geometry.origin))
    # the readout crop in hybrid space is exact: float32 rounding apart
    np.testing.assert_allclose(images[0], images[1], rtol=0, atol=1e-5 * float(images[0].max()))
    np.testing.assert_allclose(origins[0], origins[1], atol=1e-4)
