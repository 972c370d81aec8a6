"""DICOM series writer/reader: round trips, geometry, HU, de-identification, validators."""

from __future__ import annotations

import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from scipy.spatial.transform import Rotation

from tests.helpers import rewrite_dicom
from mrirecon.data import Image, ImageGeometry
from mrirecon.io.dicom import choose_rescale, save_part10, write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.nifti import write_nifti


def oblique_geometry() -> ImageGeometry:
    rot = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()
    return ImageGeometry(
        spacing=(3.0, 0.8, 0.9), origin=(10.5, -20.25, 30.0),
        orientation=tuple(rot[:, 0]) + tuple(rot[:, 1]), slice_thickness=2.5,
    )


def mr_image(scale: float = 1e-3, shape=(4, 12, 10)) -> Image:
    g = torch.Generator().manual_seed(1)
    return Image(torch.rand(shape, generator=g) * scale, oblique_geometry(), description="test")


def ct_image(integer: bool = False) -> Image:
    g = torch.Generator().manual_seed(2)
    hu = torch.rand((3, 8, 9), generator=g, dtype=torch.float64) * 3000 - 1024
    if integer:
        hu = hu.round()
    geometry = ImageGeometry(spacing=(1.25, 0.7, 0.7), origin=(-100.0, -120.0, 55.0))
    return Image(hu.float(), geometry, kind="hu", modality="CT")


def assert_same_geometry(a: ImageGeometry, b: ImageGeometry) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.orientation, b.orientation, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.slice_thickness, b.slice_thickness, rtol=0, atol=1e-9)


def value_slope(path) -> float:
    """Stored-to-data factor: RescaleSlope (CT) or the Real World Value Mapping (MR)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "RescaleSlope" in ds:
        return float(ds.RescaleSlope)
    return float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope)


def quantisation_bound(path) -> float:
    return value_slope(path) / 2


# ---------------------------------------------------------------------------------- rescale

@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_choose_rescale_error_within_half_slope_and_uses_range(modality):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 5, 7)) * 300 + (400 if modality == "MR" else 0)
    stored, slope, intercept = choose_rescale(data, modality)
    assert len(slope) <= 16 and len(intercept) <= 16
    s, b = float(slope), float(intercept)
    assert np.max(np.abs(stored * s + b - data)) <= s / 2 * (1 + 1e-9)
    top = 65535 if modality == "MR" else 32767
    assert stored.dtype == (np.uint16 if modality == "MR" else np.int16)
    assert np.abs(stored.astype(np.int64)).max() >= top - 1  # full 16-bit range used


def test_choose_rescale_ct_integer_hu_is_exact_identity():
    data = np.array([[-1024.0, 0.0, 40.0, 3071.0]])
    stored, slope, intercept = choose_rescale(data, "CT")
    assert (slope, intercept) == ("1", "0")
    np.testing.assert_array_equal(stored, data.astype(np.int16))


# ---------------------------------------------------------------------------- round trips

def test_mr_oblique_round_trip_and_file_structure(tmp_path):
    image = mr_image()
    paths = write_dicom_series(image, tmp_path / "mr", series_description="recon", series_number=7)
    assert [p.name for p in paths] == [f"slice_{k:04d}.dcm" for k in range(1, 5)]
    assert sorted(p.name for p in (tmp_path / "mr").iterdir()) == [p.name for p in paths]  # no temp
    back = read_dicom_series(tmp_path / "mr")
    bound = quantisation_bound(paths[0])
    err = (back.data.double() - image.data.double()).abs().max().item()
    assert err <= bound * 1.001 + 1e-12
    assert_same_geometry(back.geometry, image.geometry)
    assert (back.kind, back.modality, back.description) == ("magnitude", "MR", "recon")

    datasets = [pydicom.dcmread(p) for p in paths]
    assert open(paths[0], "rb").read()[128:132] == b"DICM"
    for k, ds in enumerate(datasets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.InstanceNumber == k + 1 and ds.SeriesNumber == 7
        assert ds.PixelRepresentation == 0 and ds.BitsAllocated == 16
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], image.geometry.slice_position(k), atol=1e-9
        )
        assert float(ds.SpacingBetweenSlices) == 3.0 and float(ds.SliceThickness) == 2.5
        for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                   "FrameOfReferenceUID"):
            assert UID(ds[kw].value).is_valid
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[keyword].value for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(paths)
    # stored like a scanner's MR: 12-bit integers, volume max at the top, no Modality LUT, a
    # window inside the stored range
    assert max(ds.pixel_array.max() for ds in datasets) >= 4094
    for ds in datasets:
        assert ds.BitsStored == 12 and ds.HighBit == 11 and ds.pixel_array.max() <= 4095
        assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds
        center, width = float(ds.WindowCenter), float(ds.WindowWidth)
        assert 0 < center < 4095 and 1 <= width <= 4095
        assert ds.RealWorldValueMappingSequence[0].RealWorldValueLastValueMapped == 4095
    # a second call makes a new series
    other = write_dicom_series(image, tmp_path / "mr2")
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != datasets[0].SeriesInstanceUID


def test_read_sorts_by_position_not_file_name(tmp_path):
    image = mr_image()
    paths = write_dicom_series(image, tmp_path / "in")
    out = tmp_path / "shuffled"
    out.mkdir()
    for k, p in enumerate(paths):  # reverse the file-name order
        shutil.copy(p, out / f"x{len(paths) - k}.dcm")
    (out / "README.txt").write_text("not dicom")  # ignored
    back = read_dicom_series(out)
    assert_same_geometry(back.geometry, image.geometry)
    assert torch.allclose(back.data, image.data, atol=quantisation_bound(paths[0]) * 1.001)


def test_single_slice_and_non_ascii_description(tmp_path):
    image = mr_image(shape=(1, 6, 5))
    paths = write_dicom_series(image, tmp_path, series_description="T1 \u00fcber")
    assert pydicom.dcmread(paths[0]).SpecificCharacterSet == "ISO_IR 192"
    back = read_dicom_series(tmp_path)
    assert back.description == "T1 \u00fcber"
    assert_same_geometry(back.geometry, image.geometry)  # slice spacing from SpacingBetweenSlices


def test_ct_hu_negative_values_round_trip(tmp_path):
    image = ct_image()
    assert image.data.min() < -1000
    paths = write_dicom_series(image, tmp_path / "ct")
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
    assert ds.PixelRepresentation == 1 and ds.RescaleType == "HU"
    assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.min() < 0
    assert list(ds.ImageType)[:3] == ["DERIVED", "PRIMARY", "AXIAL"]
    back = read_dicom_series(tmp_path / "ct")
    assert back.kind == "hu" and back.modality == "CT"
    err = (back.data.double() - image.data.double()).abs().max().item()
    assert err <= float(ds.RescaleSlope) / 2 + 1e-4  # + float32 rounding of ~3000 HU
    assert_same_geometry(back.geometry, image.geometry)


def test_a_ct_image_without_rescale_is_refused(tmp_path):
    # RescaleIntercept / RescaleSlope are type 1 in the CT Image Module; read as slope 1 and
    # intercept 0, stored HU + 1024 put air at +24 HU (exit 0, normal-looking metrics)
    from mrirecon.io.errors import DataFormatError

    paths = write_dicom_series(ct_image(integer=True), tmp_path / "ct")
    ds = pydicom.dcmread(paths[1])
    del ds.RescaleIntercept
    ds.save_as(paths[1])
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: RescaleIntercept: missing: a CT "
                                              r"image must hold RescaleIntercept and RescaleSlope"):
        read_dicom_series(tmp_path / "ct")


def test_ct_integer_hu_is_lossless_and_attenuation_kind(tmp_path):
    image = ct_image(integer=True)
    write_dicom_series(image, tmp_path / "hu")
    assert torch.equal(read_dicom_series(tmp_path / "hu").data, image.data)
    mu = Image(image.data.abs() * 1e-5, image.geometry, kind="attenuation", modality="CT")
    paths = write_dicom_series(mu, tmp_path / "mu")
    assert pydicom.dcmread(paths[0]).RescaleType == "US"
    back = read_dicom_series(tmp_path / "mu")
    assert back.kind == "attenuation"
    assert torch.allclose(back.data, mu.data, atol=quantisation_bound(paths[0]) * 1.01)


def test_window_default_given_and_small_width(tmp_path):
    # MR: the window is in stored units, from the tissue's 0.5-99.5 percentiles, and does not
    # depend on the arbitrary scale of the reconstruction (1e-3 here: the issue-12 case)
    small = pydicom.dcmread(write_dicom_series(mr_image(scale=1e-3), tmp_path / "a")[0])
    unit = pydicom.dcmread(write_dicom_series(mr_image(scale=1.0), tmp_path / "u")[0])
    stored = small.pixel_array[small.pixel_array > 0]
    lo, hi = np.percentile(stored, (0.5, 99.5))
    assert float(small.WindowWidth) >= 1 and "VOILUTFunction" not in small
    assert float(small.WindowCenter) > 0 and float(small.WindowWidth) <= 4095
    # the percentiles of one slice bracket the volume window's centre
    assert lo <= float(small.WindowCenter) <= hi
    assert (small.WindowCenter, small.WindowWidth) == (unit.WindowCenter, unit.WindowWidth)
    # an MR window given in output units is converted to stored units
    given = pydicom.dcmread(write_dicom_series(mr_image(scale=1.0), tmp_path / "g",
                                               window=(0.5, 0.25))[0])
    slope = value_slope(tmp_path / "g" / "slice_0001.dcm")
    np.testing.assert_allclose([float(given.WindowCenter) * slope, float(given.WindowWidth) * slope],
                               [0.5, 0.25], rtol=1e-6)
    ct = pydicom.dcmread(write_dicom_series(ct_image(), tmp_path / "b", window=(40, 400))[0])
    assert (float(ct.WindowCenter), float(ct.WindowWidth)) == (40.0, 400.0)
    assert "VOILUTFunction" not in ct
    # CT attenuation (1/mm) has a data-range window below 1: LINEAR would be invalid
    ctimg = ct_image()
    mu = Image(ctimg.data.abs() * 1e-5, ctimg.geometry, kind="attenuation", modality="CT")
    tiny = pydicom.dcmread(write_dicom_series(mu, tmp_path / "mu")[0])
    assert float(tiny.WindowWidth) < 1 and tiny.VOILUTFunction == "LINEAR_EXACT"


# ------------------------------------------------------------------------ de-identification

def source_dataset(modality: str = "MR") -> Dataset:
    src = Dataset()
    src.Modality = modality
    src.PatientName = "Doe^Jane"
    src.PatientID = "PID-998877"
    src.PatientBirthDate = "19700102"
    src.PatientSex = "F"
    src.StudyDate = "20240315"
    src.StudyTime = "101112"
    src.AccessionNumber = "ACC-4242"
    src.InstitutionName = "Secret Hospital"
    src.StudyInstanceUID = "1.2.3.4.5.6.7.8.9"
    src.FrameOfReferenceUID = "1.2.3.4.5.6.7.8.10"
    src.EchoTime = "12.5"
    src.RepetitionTime = "3000"
    src.ScanningSequence = "SE"
    src.SequenceVariant = "SK"
    src.MagneticFieldStrength = "3"
    src.Manufacturer = "ACME"
    return src


SECRETS = (b"Doe^Jane", b"PID-998877", b"19700102", b"20240315", b"101112", b"ACC-4242",
           b"Secret Hospital", b"1.2.3.4.5.6.7.8.9", b"1.2.3.4.5.6.7.8.10")


def _bytes_but_random_ones(path) -> bytes:
    """The file's bytes less its pixel data and generated UIDs: random digits in either may
    spell a short secret such as the study time '101112' by chance (one CI run in many)."""
    raw = path.read_bytes()
    ds = pydicom.dcmread(path)
    uids = {str(e.value) for e in [*ds.file_meta.iterall(), *ds.iterall()] if e.VR == "UI"}
    for uid in uids:
        assert uid.encode() not in SECRETS, uid  # a source UID must not be carried over
    raw = raw.replace(ds.PixelData, b"")
    for uid in sorted(uids, key=len, reverse=True):
        raw = raw.replace(uid.encode(), b"")
    return raw


def test_deidentified_by_default(tmp_path):
    paths = write_dicom_series(mr_image(), tmp_path / "d", source_dataset=source_dataset())
    for p in paths:
        raw = _bytes_but_random_ones(p)
        for secret in SECRETS:
            assert secret not in raw, secret
    ds = pydicom.dcmread(paths[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.StudyDate == ""
    # technique (non-identifying) attributes are kept
    assert float(ds.EchoTime) == 12.5 and ds.ScanningSequence == "SE" and ds.Manufacturer == "ACME"


def test_keep_identity_and_explicit_patient(tmp_path):
    src_file = tmp_path / "src.dcm"
    src = source_dataset()
    src.SOPClassUID = MRImageStorage
    src.SOPInstanceUID = "1.2.3.99"
    src.file_meta = FileMetaDataset()
    src.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    save_part10(src, src_file)
    paths = write_dicom_series(
        mr_image(), tmp_path / "k", source_dataset=src_file, keep_identity=True
    )
    ds = pydicom.dcmread(paths[0])
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "PID-998877"
    assert ds.StudyInstanceUID == "1.2.3.4.5.6.7.8.9" and ds.StudyDate == "20240315"
    assert ds.FrameOfReferenceUID == "1.2.3.4.5.6.7.8.10"
    assert "PatientIdentityRemoved" not in ds
    named = write_dicom_series(
        mr_image(), tmp_path / "p", patient={"PatientName": "Roe^R", "PatientID": "X1"},
        study_uid="1.2.840.99.1",
    )
    ds = pydicom.dcmread(named[0])
    assert (str(ds.PatientName), ds.PatientID) == ("Roe^R", "X1")
    assert ds.StudyInstanceUID == "1.2.840.99.1" and "PatientIdentityRemoved" not in ds
    with pytest.raises(ValueError, match="patient key 'Name'"):
        write_dicom_series(mr_image(), tmp_path / "q", patient={"Name": "x"})
    with pytest.raises(ValueError, match="source_dataset Modality is 'CT'"):
        write_dicom_series(mr_image(), tmp_path / "r", source_dataset=source_dataset("CT"))


# ------------------------------------------------------------------------------ bad inputs

def test_writer_rejects_bad_images(tmp_path):
    geometry = ImageGeometry()
    with pytest.raises(TypeError, match="complex"):
        complex_image = Image(torch.ones(1, 2, 2, dtype=torch.complex64), geometry, kind="complex")
        write_dicom_series(complex_image, tmp_path)
    with pytest.raises(ValueError, match="1 NaN"):
        write_dicom_series(Image(torch.tensor([[[1.0, float("nan")]]]), geometry), tmp_path)
    with pytest.raises(ValueError, match="CT Image.kind must be"):
        write_dicom_series(Image(torch.ones(1, 2, 2), geometry, modality="CT"), tmp_path)
    with pytest.raises(ValueError, match="64"):
        write_dicom_series(mr_image(), tmp_path, series_description="x" * 65)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"PixelData": None}, "slice_0002.dcm: PixelData: missing"),
        ({"ImageOrientationPatient": [0, 1, 0, 1, 0, 0]}, "slice_0002.dcm: ImageOrientationPatient"),
        ({"Rows": 11}, r"slice_0002.dcm: \(Rows, Columns\): = \(11, 10\)"),
        ({"PixelSpacing": [0.5, 0.9]}, "slice_0002.dcm: PixelSpacing"),
        ({"ImagePositionPatient": None}, "slice_0002.dcm: ImagePositionPatient: missing"),
        ({"SeriesInstanceUID": "1.2.3"}, "mixes 2 series"),
    ],
)
def test_reader_errors_name_file_and_field(tmp_path, change, message):
    paths = write_dicom_series(mr_image(), tmp_path)
    rewrite_dicom(paths[1], **change)
    with pytest.raises(ValueError, match=message):
        read_dicom_series(tmp_path)


def test_reader_position_errors_and_series_selection(tmp_path):
    image = mr_image()
    paths = write_dicom_series(image, tmp_path / "a")
    shutil.copy(paths[0], tmp_path / "a" / "dup.dcm")
    rewrite_dicom(tmp_path / "a" / "dup.dcm", SOPInstanceUID="1.2.3.4")
    with pytest.raises(ValueError, match="same ImagePositionPatient"):
        read_dicom_series(tmp_path / "a")
    paths = write_dicom_series(image, tmp_path / "b")
    paths[2].unlink()
    with pytest.raises(ValueError, match="not uniform"):
        read_dicom_series(tmp_path / "b")
    # two series in one folder: pick one by UID
    mixed = tmp_path / "mixed"
    first = write_dicom_series(image, mixed)
    for p in write_dicom_series(ct_image(), tmp_path / "ct"):
        shutil.copy(p, mixed / ("ct_" + p.name))
    uid = pydicom.dcmread(first[0]).SeriesInstanceUID
    assert read_dicom_series(mixed, series_uid=uid).data.shape == image.data.shape
    with pytest.raises(FileNotFoundError, match="no DICOM image files"):
        (tmp_path / "empty").mkdir()
        read_dicom_series(tmp_path / "empty")


# ------------------------------------------------------------------------ external validators

def mr_with_source_technique() -> tuple[Image, Dataset]:
    src = source_dataset()
    src.ScanningSequence = ["SE", "IR"]  # inversion recovery makes InversionTime required
    src.InversionTime = "150"
    src.BodyPartExamined = "KNEE"
    src.Laterality = "L"
    return mr_image(), src


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize(
    "make", [mr_image, ct_image, mr_with_source_technique], ids=["MR", "CT", "MR-source"]
)
def test_dciodvfy_reports_no_errors(tmp_path, make):
    made = make()
    image, source = made if isinstance(made, tuple) else (made, None)
    paths = write_dicom_series(image, tmp_path, source_dataset=source, keep_identity=True,
                               series_description="Rekonstruktion ü")
    for path in (paths[0], paths[-1]):
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        report = run.stdout + run.stderr
        assert ("CTImage" if make is ct_image else "MRImage") in report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report


def _world_lookup(img: nib.Nifti1Image, ref: nib.Nifti1Image) -> np.ndarray:
    """Values of ``img`` at the voxel centres of ``ref`` (grids must coincide up to flips)."""
    ijk = np.indices(ref.shape[:3]).reshape(3, -1)
    world = ref.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    src = np.linalg.inv(img.affine) @ world
    idx = np.round(src[:3]).astype(int)
    assert np.max(np.abs(src[:3] - idx)) < 1e-3, "voxel grids do not coincide"
    for axis in range(3):
        assert idx[axis].min() >= 0 and idx[axis].max() < img.shape[axis]
    return img.get_fdata()[idx[0], idx[1], idx[2]].reshape(ref.shape[:3])


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
@pytest.mark.parametrize("make", [mr_image, ct_image], ids=["MR-oblique", "CT"])
def test_dcm2niix_matches_write_nifti(tmp_path, make):
    image = make()
    write_dicom_series(image, tmp_path / "dcm")
    write_nifti(image, tmp_path / "ours.nii")
    out = tmp_path / "conv"
    out.mkdir()
    subprocess.run(
        ["dcm2niix", "-b", "n", "-z", "n", "-f", "conv", "-o", str(out), str(tmp_path / "dcm")],
        check=True, capture_output=True, timeout=120,
    )
    theirs = nib.load(out / "conv.nii")
    ours = nib.load(tmp_path / "ours.nii")
    assert sorted(theirs.shape) == sorted(ours.shape)
    zooms = sorted(np.linalg.norm(theirs.affine[:3, :3], axis=0))
    np.testing.assert_allclose(zooms, sorted(image.geometry.spacing), rtol=1e-5)
    values = _world_lookup(theirs, ours)  # also asserts voxel centres coincide in world mm
    bound = quantisation_bound(tmp_path / "dcm" / "slice_0001.dcm")
    float32_rounding = 1e-3 if make is ct_image else 0.0  # ours stores float32 HU ~ 3000
    atol = bound * 1.01 + float32_rounding
    if make is mr_image:
        # MR has no Modality LUT, so dcm2niix keeps the stored integers; the Real World Value
        # slope maps them onto our NIfTI
        values = values * value_slope(tmp_path / "dcm" / "slice_0001.dcm")
    np.testing.assert_allclose(values, ours.get_fdata(), rtol=0, atol=atol)
    # the scaling reproduces the data, not a rescaled copy
    assert abs(values.max() - float(image.data.max())) <= bound * 1.01 + 1e-3


def test_quantisation_warning_when_hot_voxels_leave_the_image_few_grey_levels():
    """12-bit MR scaled to the maximum: one voxel at 1e4x the tissue leaves the tissue a few
    stored levels (a series that looks blank); CT beyond the 16-bit range gets coarse steps.
    The warning's figures are those of the integers actually written."""
    from mrirecon.io.dicom import (MAX_CT_STEP_HU, MIN_TISSUE_LEVELS, choose_mr_scale,
                                   choose_rescale, quantisation_warning)

    rng = np.random.default_rng(0)
    mr = rng.uniform(0.5, 1.0, (2, 32, 32))
    assert quantisation_warning(mr, "MR") is None
    assert quantisation_warning(np.zeros((1, 4, 4)), "MR") is None
    hot = mr.copy()
    hot[0, 3, 3] = 1e4
    msg = quantisation_warning(hot, "MR")
    assert msg is not None and "12-bit DICOM files" in msg and "hot voxels" in msg
    stored, _ = choose_mr_scale(hot)
    tissue_levels = len(np.unique(stored[hot <= np.percentile(hot, 99.5)]))
    assert tissue_levels < MIN_TISSUE_LEVELS and f"keeps only {tissue_levels} grey" in msg
    ct = rng.uniform(-1000, 2000, (2, 32, 32))
    assert quantisation_warning(ct, "CT") is None
    ct[1, 0, 0] = 1e6
    msg = quantisation_warning(ct, "CT")
    _, slope, _ = choose_rescale(ct, "CT")
    assert float(slope) > MAX_CT_STEP_HU and f"steps of {float(slope):.3g} HU" in msg
