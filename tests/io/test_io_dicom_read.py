"""DICOM reader on inputs the writer never makes: empty or zero rescale values, Enhanced
(multi-frame) files, positions and orientations rounded as scanners write them."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import CTImageStorage
from scipy.spatial.transform import Rotation

from tests.helpers import rewrite_dicom
from mrirecon.data import Image, ImageGeometry
from mrirecon.io.dicom import save_part10, write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.errors import DataFormatError
from mrirecon.io.slice_placement import NORMAL_ANGLE_TOL

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _geometry(spacing: float = 2.0) -> ImageGeometry:
    rot = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
    return ImageGeometry(spacing=(spacing, 0.8, 0.9), origin=(10.5, -20.25, 30.0),
                         orientation=tuple(rot[:, 0]) + tuple(rot[:, 1]))


def _series(folder, modality: str, slices: int = 3, spacing: float = 2.0):
    g = torch.Generator().manual_seed(3)
    data = torch.rand((slices, 8, 9), generator=g, dtype=torch.float64)
    if modality == "CT":  # integer HU: stored exactly with slope 1, intercept 0
        image = Image((data * 2000 - 1000).round().float(), _geometry(spacing), kind="hu",
                      modality="CT")
    else:
        image = Image(data.float(), _geometry(spacing), kind="magnitude", modality="MR")
    return image, write_dicom_series(image, folder)


# ------------------------------------------------------------------ RescaleSlope / Intercept

@pytest.mark.parametrize("modality, keyword, value, message", [
    # type 1 in the CT Image Module: an empty intercept read as 0 put air at +24 HU
    ("CT", "RescaleIntercept", "", "RescaleIntercept: empty: type 1 in the CT Image Module"),
    ("CT", "RescaleSlope", "", "RescaleSlope: empty: type 1 in the CT Image Module"),
    ("CT", "RescaleSlope", "0", "RescaleSlope: is 0, not a valid slope"),
    ("MR", "RescaleSlope", "0", "RescaleSlope: is 0, not a valid slope"),
])
def test_empty_or_zero_rescale_is_refused_naming_file_and_element(tmp_path, modality, keyword,
                                                                  value, message):
    _, paths = _series(tmp_path, modality)
    rewrite_dicom(paths[1], **{keyword: value})
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: {message}"):
        read_dicom_series(tmp_path)


def test_an_empty_mr_rescale_slope_is_read_as_absent(tmp_path):
    """The MR IOD defines no Modality LUT: an empty RescaleSlope is no slope, and the Real
    World Value Mapping still gives the units (it was skipped: stored values came back)."""
    _, paths = _series(tmp_path, "MR")
    before = read_dicom_series(tmp_path).data
    for path in paths:
        rewrite_dicom(path, RescaleSlope="")
    assert torch.equal(read_dicom_series(tmp_path).data, before)


def test_a_zero_real_world_value_slope_is_refused(tmp_path):
    _, paths = _series(tmp_path, "MR")
    ds = pydicom.dcmread(paths[0])
    ds.RealWorldValueMappingSequence[0].RealWorldValueSlope = 0.0
    save_part10(ds, paths[0])
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: RealWorldValueSlope: is 0"):
        read_dicom_series(tmp_path)


# ------------------------------------------------------------------------ multi-frame files

def test_an_enhanced_ct_file_is_refused_as_multi_frame_not_as_missing_geometry(tmp_path):
    # Enhanced CT keeps ImageOrientationPatient per frame (functional groups): it was refused
    # as "ImageOrientationPatient: missing"
    _, paths = _series(tmp_path, "CT")
    rewrite_dicom(paths[1], SOPClassUID=ENHANCED_CT, NumberOfFrames=2, ImageOrientationPatient=None,
             ImagePositionPatient=None, PixelSpacing=None)
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: SOPClassUID: Enhanced CT Image "
                                              r"Storage \(multi-frame, 2 frame\(s\)\) is not "
                                              r"supported.* emf2sf"):
        read_dicom_series(tmp_path)


def test_several_frames_in_a_ct_image_storage_file_are_refused(tmp_path):
    _, paths = _series(tmp_path, "CT")
    assert pydicom.dcmread(paths[0]).SOPClassUID == CTImageStorage
    rewrite_dicom(paths[0], NumberOfFrames=3)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: NumberOfFrames: is 3; only "
                                              "single-frame images are supported"):
        read_dicom_series(tmp_path)


# ------------------------------------------------- positions and orientations as written

Q_MM = 0.01  # positions rounded to 2 decimals, as scanners write them
IOP_DECIMALS = 3


def _round_positions(paths, decimals: int = 2) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        rewrite_dicom(path, ImagePositionPatient=[round(float(v), decimals) for v in ds.ImagePositionPatient])


def _round_orientation(paths, decimals: int) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        rewrite_dicom(path, ImageOrientationPatient=[round(float(v), decimals)
                                                for v in ds.ImageOrientationPatient])


def test_positions_and_orientation_rounded_as_scanners_write_them_are_read(tmp_path):
    """0.625 mm oblique slices with positions to 0.01 mm and cosines to 3 decimals: refused
    before ("is a slice missing?", and a ValueError naming no file)."""
    n = 12
    image, paths = _series(tmp_path, "CT", slices=n, spacing=0.625)
    _round_positions(paths)
    _round_orientation(paths, IOP_DECIMALS)
    back = read_dicom_series(tmp_path)
    assert torch.equal(back.data, image.data)
    true, got = image.geometry, back.geometry
    r, c = np.array(got.orientation[:3]), np.array(got.orientation[3:])
    assert abs(r @ c) < 1e-12 and abs(np.linalg.norm(r) - 1) < 1e-12 and abs(np.linalg.norm(c) - 1) < 1e-12
    # rounding moves each cosine by <= 5e-4 (a vector by sqrt(3) * 5e-4); normalising at most
    # doubles that, and making the pair orthogonal turns each by at most half their dot product
    bound = 2 * np.sqrt(3) * 5e-4 + np.sqrt(3) * 5e-4
    assert np.linalg.norm(np.subtract(got.orientation, true.orientation)[:3]) <= bound
    assert np.linalg.norm(np.subtract(got.orientation, true.orientation)[3:]) <= bound
    # the origin is the first slice's rounded position: each coordinate within Q / 2
    np.testing.assert_allclose(got.origin, true.origin, rtol=0, atol=Q_MM / 2 + 1e-9)
    # the spacing is the end-to-end distance over n - 1 steps; each end is Q / 2 * |normal|_1 off
    assert abs(got.spacing[0] - true.spacing[0]) <= np.sqrt(3) * Q_MM / (n - 1) + 1e-6


def test_rounded_positions_still_refuse_a_missing_slice_and_irregular_steps(tmp_path):
    _, paths = _series(tmp_path / "gap", "CT", slices=8, spacing=0.625)
    _round_positions(paths)
    paths[4].unlink()
    with pytest.raises(DataFormatError, match=r"not uniform.* step from slice_0004.dcm to "
                                              r"slice_0006.dcm is 2.0\d times the smallest: is a "
                                              r"slice missing\?"):
        read_dicom_series(tmp_path / "gap")
    # one slice 0.1 mm off along the normal: beyond what rounding to 0.01 mm can do (0.035 mm)
    image, paths = _series(tmp_path / "shift", "CT", slices=8, spacing=0.625)
    moved = np.array(image.geometry.slice_position(3)) + 0.1 * image.geometry.slice_direction
    rewrite_dicom(paths[3], ImagePositionPatient=[f"{v:.6f}" for v in moved])
    with pytest.raises(DataFormatError, match="not uniform") as err:
        read_dicom_series(tmp_path / "shift")
    assert "missing" not in str(err.value)


def test_an_orientation_beyond_rounding_names_the_file_and_element(tmp_path):
    # cosines to 2 decimals: norms 1.0018 / 1.0021, dot -0.0066 for this orientation
    _, paths = _series(tmp_path, "CT")
    _round_orientation(paths, 2)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: ImageOrientationPatient: .* "
                                              "is not two orthogonal unit vectors"):
        read_dicom_series(tmp_path)


def test_a_long_series_with_rounded_cosines_is_not_taken_for_a_gantry_tilt(tmp_path):
    # 24 slices of 5 mm: the normal of cosines rounded to 3 decimals is up to 2.6e-3 rad off,
    # so the far slices leave it by up to 0.3 mm; it was refused as "gantry tilt"
    image, paths = _series(tmp_path / "long", "CT", slices=24, spacing=5.0)
    _round_orientation(paths, IOP_DECIMALS)
    back = read_dicom_series(tmp_path / "long")
    assert torch.equal(back.data, image.data)
    assert abs(back.geometry.spacing[0] - 5.0) < 1e-4  # cos(2.6e-3) - 1 = -3.4e-6


@pytest.mark.parametrize("decimals", [None, IOP_DECIMALS])
def test_a_gantry_tilt_of_one_degree_is_refused(tmp_path, decimals):
    image, paths = _series(tmp_path, "CT", slices=24, spacing=5.0)
    g = image.geometry
    for k, path in enumerate(paths):  # each slice shifted along the rows by tan(1 deg) x its distance
        shifted = np.array(g.slice_position(k)) + k * g.spacing[0] * np.tan(np.radians(1)) * g.column_direction
        rewrite_dicom(path, ImagePositionPatient=[f"{v:.6f}" for v in shifted])
    if decimals is not None:
        _round_orientation(paths, decimals)
    with pytest.raises(DataFormatError, match=r"ImagePositionPatient: .* mm off the slice normal "
                                              r"through the first slice \(gantry tilt is not supported\)"):
        read_dicom_series(tmp_path)


def test_a_series_description_with_the_value_delimiter_is_read_as_written(tmp_path):
    # an invalid VM 2 SeriesDescription came back as "['T1', 'T2']" (and was exported so)
    _, paths = _series(tmp_path, "MR")
    for path in paths:
        rewrite_dicom(path, SeriesDescription="T1\\T2")
    assert read_dicom_series(tmp_path).description == "T1\\T2"


# ------------------------------------------------------------------ DICOM-CT-PD projections

@pytest.mark.parametrize("plane_module", [False, True])
@pytest.mark.parametrize("tag, name", [(0x7029, "(7029,1010) NumberofDetectorRows"),
                                       (0x7031, "(7031,1001) DetectorFocalCenterAngularPosition")])
def test_dicom_ct_pd_projection_files_are_refused_as_projections(tmp_path, plane_module, tag,
                                                                 name):
    """Audit a21 F2: TCIA's DICOM-CT-PD files (one CT file per projection, line integrals in
    PixelData, the geometry in private tags) were refused as "ImageOrientationPatient: missing"
    (as published), or, once a converter added the image plane module, read as axial "HU"
    slices and reconstructed, exit 0."""
    image, paths = _series(tmp_path, "CT")
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        block = ds.private_block(tag, "DLX_PD", create=True)
        if tag == 0x7029:
            block.add_new(0x10, "US", 8)   # NumberofDetectorRows
        else:
            block.add_new(0x01, "FL", 0.1 * index)  # DetectorFocalCenterAngularPosition
        if not plane_module:  # as TCIA publishes them
            del ds.ImageOrientationPatient, ds.ImagePositionPatient
        ds.save_as(path)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: {re.escape(name)}: DICOM-CT-PD "
                       r"projection data.*not images.*write_lodopab.*own sinogram"):
        read_dicom_series(tmp_path)


def test_a_private_7029_group_of_another_creator_block_is_still_an_image(tmp_path):
    """Only the DICOM-CT-PD elements count: another private element in group 7029 is read."""
    image, paths = _series(tmp_path, "CT")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.private_block(0x7029, "OTHER", create=True).add_new(0x20, "LO", "x")  # (7029,1020)
        ds.save_as(path)
    assert torch.equal(read_dicom_series(tmp_path).data, image.data)


def test_ct_modality_lut_is_stored_times_slope_plus_intercept(tmp_path):
    """PS3.3 C.11.1.1.2: HU = stored x RescaleSlope + RescaleIntercept. mrirecon's writer puts
    intercept 0 and the other tests' scanner files slope 1, where ``(stored + intercept) x
    slope`` reads the same; a series with slope 0.5 and intercept -1024 reads exactly (every
    value a multiple of 0.5 below 2^11, exact in float32)."""
    from pydicom.uid import generate_uid

    from tests.helpers import ct_slice_dataset

    words = np.random.default_rng(0).integers(0, 4096, size=(2, 6, 7)).astype(np.uint16)
    series = generate_uid()
    for k in range(2):
        ds = ct_slice_dataset(k, series, words[k], intercept="-1024")
        ds.RescaleSlope = "0.5"
        save_part10(ds, tmp_path / f"{k}.dcm")
    hu = read_dicom_series(tmp_path).data.numpy()
    np.testing.assert_array_equal(hu, (words * 0.5 - 1024).astype(np.float32))


def test_slice_location_is_the_position_along_the_slice_normal(tmp_path):
    """SliceLocation (viewers show it, some tools sort by it) is ImagePositionPatient's signed
    distance along the slice normal (row x column cosine), here for a coronal series whose
    normal is +y; agreement to the precision of the written decimal strings."""
    g = ImageGeometry(spacing=(2.5, 0.8, 0.9), origin=(10.5, -20.25, 30.0),
                      orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    data = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5)
    paths = write_dicom_series(Image(data, g, kind="hu", modality="CT"), tmp_path)
    locations = []
    for path in paths:
        ds = pydicom.dcmread(path)
        iop = np.array(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        expected = float(np.dot(np.array(ds.ImagePositionPatient, float), normal))
        assert abs(float(ds.SliceLocation) - expected) <= 1e-6 * max(1.0, abs(expected)) + 1e-4
        locations.append(float(ds.SliceLocation))
    assert np.allclose(np.diff(sorted(locations)), 2.5, atol=1e-4)


@pytest.mark.parametrize("offset_mm", [0.0, 1000.0])
def test_the_gantry_tilt_allowance_does_not_grow_with_the_table_position(tmp_path, offset_mm):
    """The tilt allowance of rounded cosines is NORMAL_ANGLE_TOL times the distance *from the
    first slice*: the same tilted series is refused wherever the table puts it (a series 1 m
    down the table along its normal must not get 1 m x 2.6e-3 = 2.6 mm of extra allowance)."""
    n, dz = 24, 5.0
    rot = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
    r, c = rot[:, 0], rot[:, 1]
    normal = np.cross(r, c)
    origin = np.array([10.5, -20.25, 30.0]) + offset_mm * normal
    g = ImageGeometry(spacing=(dz, 0.8, 0.9), origin=tuple(origin),
                      orientation=tuple(r) + tuple(c))
    data = (torch.rand((n, 8, 9), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            * 2000 - 1000).round().float()
    paths = write_dicom_series(Image(data, g, kind="hu", modality="CT"), tmp_path)
    # drift of the last slice: 1 mm, i.e. 3x what rounded cosines allow over the series
    # (NORMAL_ANGLE_TOL x 115 mm = 0.30 mm), far below 1 m x NORMAL_ANGLE_TOL = 2.6 mm
    last = (n - 1) * dz
    assert NORMAL_ANGLE_TOL * last < 1.0 / 3 and NORMAL_ANGLE_TOL * (last + 1000) > 2.0
    for k, path in enumerate(paths):
        shifted = np.array(g.slice_position(k)) + (k * dz / last) * 1.0 * g.column_direction
        rewrite_dicom(path, ImagePositionPatient=[f"{v:.6f}" for v in shifted])
    for path in paths:
        ds = pydicom.dcmread(path)
        rewrite_dicom(path, ImageOrientationPatient=[round(float(v), IOP_DECIMALS)
                                                     for v in ds.ImageOrientationPatient])
    with pytest.raises(DataFormatError, match=r"mm off the slice normal through the first slice"):
        read_dicom_series(tmp_path)


# ------------------------------------------------------------------ one series, one acquisition

@pytest.mark.parametrize("keyword, values, said", [
    ("SliceThickness", ("2", "2", "5"), "differs between the slices of the series: 2 ("),
    ("KVP", ("120", "80", "120"), "differs between the slices of the series: 120 ("),
])
def test_slices_of_another_thickness_or_kvp_are_warned_of(tmp_path, keyword, values, said):
    """Two acquisitions under one SeriesInstanceUID (a merged export, dual energy) were read as
    one series without a word; the outputs carry the first slice's setting."""
    from mrirecon.io.errors import DataWarning

    _, paths = _series(tmp_path, "CT")
    for path, value in zip(paths, values):
        rewrite_dicom(path, **{keyword: value})
    with pytest.warns(DataWarning, match=rf"{keyword}: {re.escape(said)}.*two acquisitions in one "
                                         r"series\?") as got:
        read_dicom_series(tmp_path)
    assert [w.message.kind for w in got if isinstance(w.message, DataWarning)].count(
        "mixed_acquisition") == 1


def test_a_single_slice_without_thickness_notes_the_1_mm_it_takes(tmp_path):
    import warnings

    from mrirecon.io.errors import DataNote

    _, paths = _series(tmp_path, "MR", slices=1)
    rewrite_dicom(paths[0], SliceThickness=None, SpacingBetweenSlices=None)
    with pytest.warns(DataNote, match=r"SliceThickness: absent, as SpacingBetweenSlices: the one "
                                      r"slice is taken as 1 mm thick"):
        image = read_dicom_series(tmp_path)
    assert image.geometry.spacing[0] == 1.0
    rewrite_dicom(paths[0], SliceThickness="3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataNote)
        assert read_dicom_series(tmp_path).geometry.spacing[0] == 3.0  # stated: no note
