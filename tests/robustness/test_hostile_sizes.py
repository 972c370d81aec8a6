"""Small files that declare huge data: a reference of (2, 60000, 60000), a mask of 1e10 columns, a
header of 1e10 bytes, a CT image_shape of 40000 x 40000, a .nii.gz of 2000 x 2000 x 500, a
deflated DICOM of 30000 x 30000. Each raised a raw MemoryError (or took the machine's memory)
naming nothing; now each is refused before it is read, naming the field. The memory here is
pretended to be 256 MiB, so the declared sizes stay small."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.io import DataFormatError
from mrirecon.io.fastmri import FastMRIFile

SMALL = 256 << 20


@pytest.fixture(autouse=True)
def small_memory(monkeypatch):
    from mrirecon.io import errors

    monkeypatch.setattr(errors, "memory_bytes", lambda: SMALL)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("src"), volumes=1, slices=1, coils=2,
                                   size=(32, 32), seed=0, resolution=2)
    return Path(path)


def _with(src: Path, dst: Path, name: str, shape, dtype) -> Path:
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as f:
        for key in s:
            if key != name:
                s.copy(key, f)
        f.attrs.update(dict(s.attrs))
        chunks = tuple(min(n, 64) for n in shape)  # declared, never written: a tiny file
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    return dst


@pytest.mark.parametrize("name, shape, dtype, read", [
    ("reconstruction_rss", (1, 6000, 6000), np.float32, lambda f: f.reference(0)),
    ("mask", (10**9,), bool, lambda f: f.mask),
    ("ismrmrd_header", (10**9,), "S1", lambda f: f.header),
])
def test_a_huge_declared_dataset_is_refused_naming_it(source, tmp_path, name, shape, dtype, read):
    path = _with(source, tmp_path / "x.h5", name, shape, dtype)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataFormatError, match=rf"x.h5: {name}: a .* would need [\d.]+ GiB, more "
                                              r"than a quarter of the 0 GiB of memory"):
        with FastMRIFile(path) as f:
            read(f)


def test_ct_geometry_with_a_huge_image_or_deep_json_is_refused():
    from mrirecon.io.lodopab_attrs import geometry_from_json

    fields = {"beam": "parallel", "image_shape": [40000, 40000], "angles": [0.0, 1.0],
              "num_detectors": 8, "pixel_size": 1.0, "detector_spacing": 1.0}
    with pytest.raises(DataFormatError, match=r"attrs/geometry: image_shape \[40000, 40000\] "
                                              r"would need 47.7 GiB"):
        geometry_from_json(json.dumps(fields))
    with pytest.raises(DataFormatError, match=r"attrs/geometry: not a valid CT geometry"):
        geometry_from_json("[" * 100_000 + "]" * 100_000)  # was a raw RecursionError


def test_a_nifti_declaring_a_huge_volume_is_refused_before_reading(tmp_path):
    import nibabel as nib

    from mrirecon.io.nifti import read_nifti

    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 500))
    header.set_data_dtype(np.uint8)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1000))
    with pytest.raises(DataFormatError, match=r"bomb.nii.gz: dim: a \(2000, 2000, 500\) volume "
                                              r"would need 14.9 GiB"):
        read_nifti(path)


def _deflated_dicom(path: Path, rows: int) -> Path:
    """One deflated CT slice of ``rows`` x ``rows`` zero pixels with what a series needs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = bytes(rows * rows * 2)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_deflated_dicom_bomb_is_refused_before_it_is_inflated(tmp_path):
    """256 MiB of memory: a data set inflating past 64 MiB is refused from its 0.1-MiB file;
    one that inflates less but declares a 2400 x 2400 image too large to decode is refused by
    its Rows / Columns. Was: a 1.75-MB file took 9.7 GB, then a raw MemoryError."""
    from mrirecon.io.dicom_files import read_candidate

    big = _deflated_dicom(tmp_path / "big.dcm", 6000)
    assert big.stat().st_size < 1 << 20
    ds, why = read_candidate(big)
    assert ds is None and "the deflated data set inflates past 0.1 GiB" in why
    from mrirecon.io.dicom_read import read_dicom_series

    folder = tmp_path / "series"
    folder.mkdir()
    small = _deflated_dicom(folder / "IM0001.dcm", 2400)  # 11 MiB inflated, 110 MiB as a volume
    assert read_candidate(small)[1] is None
    with pytest.raises(DataFormatError, match=r"IM0001.dcm: Rows/Columns: 1 slice\(s\) of "
                                              r"2400 x 2400 would need"):
        read_dicom_series(folder)


def test_a_volume_whose_outputs_cannot_be_held_is_refused_after_its_first_slice(source, tmp_path,
                                                                               monkeypatch):
    """A 1.7-MB file whose 5000 virtual slices mapped one 320 x 320 slice grew to 24 GB until
    the kernel killed the run: the volume's outputs are held for its exports. Pretending 32 KiB
    of memory, this 32 x 32 file's slice is refused after the first slice, naming the count."""
    from mrirecon.io import errors, fastmri
    from tests.robustness.test_hostile_inputs import mri_config, run_one

    monkeypatch.setattr(errors, "memory_bytes", lambda: 32 << 10)
    monkeypatch.setattr(fastmri, "refuse_oversized", lambda *a: None)  # the reader's own bounds
    entry = run_one(mri_config(), source, tmp_path / "out")
    assert entry["status"] == "failed"
    assert ".h5: 1 slices of (32, 32) outputs would hold" in entry["error"]
    assert "split the volume into files of fewer slices" in entry["error"]
