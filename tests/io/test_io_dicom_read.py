"""DICOM reader on inputs the writer never makes: empty or zero rescale values, Enhanced
(multi-frame) files, positions and orientations rounded as scanners write them."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import CTImageStorage
from scipy.spatial.transform import Rotation

from mrirecon.data import Image, ImageGeometry
from mrirecon.io.dicom import save_part10, write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.errors import DataFormatError

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    save_part10(ds, path)


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
    _rewrite(paths[1], **{keyword: value})
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: {message}"):
        read_dicom_series(tmp_path)


def test_an_empty_mr_rescale_slope_is_read_as_absent(tmp_path):
    """The MR IOD defines no Modality LUT: an empty RescaleSlope is no slope, and the Real
    World Value Mapping still gives the units (it was skipped: stored values came back)."""
    _, paths = _series(tmp_path, "MR")
    before = read_dicom_series(tmp_path).data
    for path in paths:
        _rewrite(path, RescaleSlope="")
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
    _rewrite(paths[1], SOPClassUID=ENHANCED_CT, NumberOfFrames=2, ImageOrientationPatient=None,
             ImagePositionPatient=None, PixelSpacing=None)
    with pytest.raises(DataFormatError, match=rf"{paths[1].name}: SOPClassUID: Enhanced CT Image "
                                              r"Storage \(multi-frame, 2 frame\(s\)\) is not "
                                              r"supported.* emf2sf"):
        read_dicom_series(tmp_path)


def test_several_frames_in_a_ct_image_storage_file_are_refused(tmp_path):
    _, paths = _series(tmp_path, "CT")
    assert pydicom.dcmread(paths[0]).SOPClassUID == CTImageStorage
    _rewrite(paths[0], NumberOfFrames=3)
    with pytest.raises(DataFormatError, match=rf"{paths[0].name}: NumberOfFrames: is 3; only "
                                              "single-frame images are supported"):
        read_dicom_series(tmp_path)
