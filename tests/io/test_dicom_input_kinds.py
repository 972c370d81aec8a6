"""DICOM series whose files or values are not what the reader returns: gzip-compressed slices,
MR phase / real / imaginary images, a Real World Value Mapping by lookup table, colour images,
several echoes (time points, acquisitions) of one series in one folder. Each was read without
a word (a gzipped end slice left out, a phase map as magnitude, palette indices as grey values,
stored values as real world ones) or refused with the wrong advice."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.helpers import rewrite_dicom
from mrirecon.data import Image, ImageGeometry
from mrirecon.io.dicom import save_part10, write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.errors import DataFormatError


def _series(folder, modality: str = "MR", slices: int = 4):
    g = torch.Generator().manual_seed(5)
    data = torch.rand((slices, 8, 9), generator=g, dtype=torch.float64)
    geometry = ImageGeometry(spacing=(2.0, 0.8, 0.9), origin=(1.0, -2.0, 3.0))
    if modality == "CT":  # integer HU: stored exactly
        image = Image((data * 2000 - 1000).round().float(), geometry, kind="hu", modality="CT")
    else:
        image = Image(data.float(), geometry, kind="magnitude", modality="MR")
    return write_dicom_series(image, folder)


# ---------------------------------------------------------------- gzip-compressed slices

@pytest.mark.parametrize("modality", ["MR", "CT"])
@pytest.mark.parametrize("which", [0, -1])  # an end slice: no gap for the spacing check to see
def test_a_gzipped_slice_fails_the_series_naming_the_file(tmp_path, modality, which):
    paths = _series(tmp_path, modality)
    gz = paths[which].with_name(paths[which].name + ".gz")
    gz.write_bytes(gzip.compress(paths[which].read_bytes()))
    paths[which].unlink()
    with pytest.raises(DataFormatError, match=rf"first: {gz.name}: a gzip-compressed DICOM file: "
                                              r"decompress it \(gunzip; "):
        read_dicom_series(tmp_path)


def test_gzip_bytes_under_a_slice_name_fail_the_series_too(tmp_path):
    paths = _series(tmp_path)
    bare = paths[-1].with_suffix("")  # IM0003-style name, gzip inside
    bare.write_bytes(gzip.compress(paths[-1].read_bytes()))
    paths[-1].unlink()
    with pytest.raises(DataFormatError, match=rf"{bare.name}: a gzip-compressed DICOM file"):
        read_dicom_series(tmp_path)


def test_a_folder_of_gzipped_slices_only_names_them_not_no_dicom_files(tmp_path):
    for path in _series(tmp_path):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    (tmp_path / "README.txt").write_text("series 3\n")
    with pytest.raises(DataFormatError, match=r"4 of 5 files are unreadable \(first: "
                                              r"slice_0001\.dcm\.gz: a gzip-compressed DICOM "
                                              r"file: decompress it") as err:
        read_dicom_series(tmp_path)
    assert "no DICOM image files" not in str(err.value)


def test_other_files_beside_the_slices_are_still_ignored(tmp_path):
    """A README, a PNG and compressed files that hold no DICOM (FreeSurfer's orig.mgz, a raw
    meas.dat.gz, bare notes.gz, a tar.gz of the slice) are not slices: the first rule failed
    the series over each gzip file whose name did not say another format."""
    import io
    import tarfile

    paths = _series(tmp_path)
    expected = read_dicom_series(tmp_path).data
    (tmp_path / "README").write_text("notes\n")
    (tmp_path / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"notes\n"))
    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"notes\n" * 300))
    (tmp_path / "volume.nii.gz").write_bytes(gzip.compress(bytes(400)))
    (tmp_path / "orig.mgz").write_bytes(gzip.compress(b"\x00\x00\x00\x01" + bytes(2000)))
    (tmp_path / "meas_MID00042.dat.gz").write_bytes(gzip.compress(bytes(range(256)) * 20))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(paths[0], arcname=paths[0].name)
    (tmp_path / "series.tgz").write_bytes(buffer.getvalue())
    assert torch.equal(read_dicom_series(tmp_path).data, expected)


@pytest.mark.parametrize("suffix", [".bz2", ".xz"])
def test_a_bzip2_or_xz_slice_named_dcm_fails_the_series_too(tmp_path, suffix):
    """``IM0003.dcm.bz2`` / ``.xz`` were ignored as other formats: a slice lost, exit 0."""
    import bz2
    import lzma

    paths = _series(tmp_path)
    packed = paths[-1].with_name(paths[-1].name + suffix)
    packed.write_bytes((bz2 if suffix == ".bz2" else lzma).compress(paths[-1].read_bytes()))
    paths[-1].unlink()
    kind = "bzip2" if suffix == ".bz2" else "xz"
    with pytest.raises(DataFormatError, match=rf"first: {packed.name}: a {kind}-compressed DICOM "
                                              rf"file: decompress it \({kind} -d; "):
        read_dicom_series(tmp_path)


# ------------------------------------------------------------ MR phase / real / imaginary

@pytest.mark.parametrize("value3", ["P", "PHASE", "R", "REAL", "I", "IMAGINARY"])
def test_an_mr_phase_real_or_imaginary_series_is_refused(tmp_path, value3):
    paths = _series(tmp_path)
    for path in paths:
        rewrite_dicom(path, ImageType=["ORIGINAL", "PRIMARY", value3, "ND"])
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: ImageType: value 3 is "
                                              rf"'{value3}' .*not a magnitude image"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("image_type, said", [
    (["DERIVED", "PRIMARY", "OTHER", "P", "SE"], "value 4 is 'P'"),  # M there: MR2_UNCI's
    (["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"], "value 3 is 'PHASE MAP'"),
    (["ORIGINAL", "PRIMARY", "R_FFE", "R", "FFE"], "value 3 is 'R_FFE'"),  # Philips' terms
])
def test_phase_and_real_terms_as_other_vendors_write_them_are_refused(tmp_path, image_type,
                                                                      said):
    paths = _series(tmp_path)
    for path in paths:
        rewrite_dicom(path, ImageType=image_type)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: ImageType: {said}"):
        read_dicom_series(tmp_path)


def test_a_complex_image_component_other_than_magnitude_is_refused(tmp_path):
    paths = _series(tmp_path)
    rewrite_dicom(paths[1], ComplexImageComponent="PHASE")
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: ComplexImageComponent: is "
                                              "'PHASE', not MAGNITUDE"):
        read_dicom_series(tmp_path)


def test_one_phase_image_among_magnitude_ones_is_refused(tmp_path):
    paths = _series(tmp_path)
    rewrite_dicom(paths[2], ImageType=["ORIGINAL", "PRIMARY", "P", "ND"])
    with pytest.raises(DataFormatError, match=rf"{paths[2].name}: ImageType: value 3 is 'P'"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("image_type", [["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
                                        ["ORIGINAL", "PRIMARY", "MAGNITUDE"],
                                        ["ORIGINAL", "PRIMARY", "OTHER"], ["ORIGINAL", "PRIMARY"],
                                        ["DERIVED", "PRIMARY", "OTHER", "M", "SE"],
                                        ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]])
def test_mr_magnitude_series_are_read_as_before(tmp_path, image_type):
    paths = _series(tmp_path)
    expected = read_dicom_series(tmp_path).data
    for path in paths:
        rewrite_dicom(path, ImageType=image_type, ComplexImageComponent="MAGNITUDE")
    image = read_dicom_series(tmp_path)
    assert image.kind == "magnitude" and torch.equal(image.data, expected)


# ------------------------------------------------------- Real World Value Mapping as a LUT

def _lut_item() -> Dataset:
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = 4095
    item.RealWorldValueLUTData = [2.0 * i for i in range(4096)]
    item.LUTLabel = "X2"
    return item


def test_a_real_world_value_mapping_by_lookup_table_is_refused(tmp_path):
    paths = _series(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        assert "RescaleSlope" not in ds  # MR without a Modality LUT: the mapping gives units
        ds.RealWorldValueMappingSequence = Sequence([_lut_item()])
        save_part10(ds, path)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: RealWorldValueMappingSequence:"
                                              r" .*lookup table \(RealWorldValueLUTData\)"):
        read_dicom_series(tmp_path)


def test_a_lookup_table_before_a_linear_mapping_takes_the_linear_one(tmp_path):
    """A sequence [lookup table, slope 2] was refused over its first item; the first item with
    a slope gives the units, as a single linear item does."""
    paths = _series(tmp_path)
    stored = read_dicom_series(tmp_path).data
    for path in paths:
        ds = pydicom.dcmread(path)
        linear = Dataset()
        linear.RealWorldValueFirstValueMapped = 0
        linear.RealWorldValueLastValueMapped = 65535
        linear.RealWorldValueSlope = 2.0
        linear.RealWorldValueIntercept = 0.0
        linear.LUTLabel = "X2"
        ds.RealWorldValueMappingSequence = Sequence([_lut_item(), linear])
        save_part10(ds, path)
    raw = read_dicom_series(tmp_path).data
    ours = pydicom.dcmread(paths[0])
    assert "RescaleSlope" not in ours
    # the writer's own mapping was replaced by slope 2 over the same stored integers
    stored_integers = np.stack([pydicom.dcmread(p).pixel_array for p in paths])
    torch.testing.assert_close(raw, 2.0 * torch.from_numpy(stored_integers).to(raw.dtype))
    assert raw.shape == stored.shape


def test_a_ge_phase_series_is_refused_by_its_private_image_type(tmp_path):
    """GE writes ImageType ORIGINAL\\PRIMARY\\OTHER for magnitude, phase, real and imaginary
    images alike; the kind is its private (0043,102F) (creator GEMS_PARM_01): 1 phase. A phase
    series passed as magnitude."""
    paths = _series(tmp_path)
    for kind, path in zip((1, 1, 1, 1), paths):
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
        ds.add_new((0x0043, 0x102F), "SS", kind)
        save_part10(ds, path)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: \(0043,102F\) \(GE image "
                                              r"type\): is 1 \(phase\).*ORIGINAL\\PRIMARY\\OTHER"):
        read_dicom_series(tmp_path)
    for path in paths:  # magnitude (0) reads; another vendor's element of that number too
        ds = pydicom.dcmread(path)
        ds[(0x0043, 0x102F)].value = 0
        save_part10(ds, path)
    assert read_dicom_series(tmp_path).data.shape[0] == len(paths)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds[(0x0043, 0x0010)].value = "OTHERVENDOR"
        ds[(0x0043, 0x102F)].value = 1
        save_part10(ds, path)
    assert read_dicom_series(tmp_path).data.shape[0] == len(paths)


# ------------------------------------------------------------------- colour / palette images

@pytest.mark.parametrize("photometric", ["PALETTE COLOR", "RGB", "YBR_FULL"])
@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_images_that_are_not_grey_values_are_refused(tmp_path, modality, photometric):
    paths = _series(tmp_path, modality)
    rewrite_dicom(paths[1], PhotometricInterpretation=photometric)
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: PhotometricInterpretation: "
                                              rf"is '{photometric}'.*not grey values"):
        read_dicom_series(tmp_path)


def test_monochrome1_is_read_as_before(tmp_path):
    paths = _series(tmp_path, "CT")
    expected = read_dicom_series(tmp_path).data
    for path in paths:
        rewrite_dicom(path, PhotometricInterpretation="MONOCHROME1")
    assert torch.equal(read_dicom_series(tmp_path).data, expected)


# ------------------------------------------------- several echoes / time points per position

def _second_set(folder, keyword: str, first, second) -> None:
    """Each slice again under a new SOPInstanceUID, ``keyword`` ``first`` / ``second``."""
    for path in sorted(folder.glob("slice_*.dcm")):
        copy = path.with_name("b_" + path.name)
        shutil.copy(path, copy)
        rewrite_dicom(path, **{keyword: first})
        uid = generate_uid()
        ds = pydicom.dcmread(copy)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        setattr(ds, keyword, second)
        save_part10(ds, copy)


@pytest.mark.parametrize("keyword, first, second, said", [
    ("EchoNumbers", 1, 2, "two echoes (EchoNumbers 1, 2): split the series by echo"),
    ("EchoTime", 10.0, 50.0, "two echo times (EchoTime 10, 50): split the series by echo"),
    ("TemporalPositionIdentifier", 1, 2,
     "two time points (TemporalPositionIdentifier 1, 2): split the series by time point"),
    ("AcquisitionNumber", 3, 4, "two acquisitions (AcquisitionNumber 3, 4): split the series "
                                "by acquisition"),
])
def test_two_echoes_at_one_position_are_named_with_the_split_to_make(tmp_path, keyword, first,
                                                                     second, said):
    _series(tmp_path)
    _second_set(tmp_path, keyword, first, second)
    with pytest.raises(DataFormatError, match="same position along the slice normal") as err:
        read_dicom_series(tmp_path)
    assert said in str(err.value) and "keep the one you mean" not in str(err.value)


def test_two_images_at_one_position_that_nothing_tells_apart_keep_the_old_advice(tmp_path):
    _series(tmp_path)
    _second_set(tmp_path, "SeriesDescription", "a", "a")
    with pytest.raises(DataFormatError, match="two images at one position .*keep the one you "
                                              "mean in the folder"):
        read_dicom_series(tmp_path)
