"""Exported DICOM / NIfTI files found wanting by an audit of what `mrirecon run` writes:
``export.keep_identity`` ignored (nothing of a DICOM input's header reached its DICOM output),
CT windows over the full data range, a one-slice CT series without its slice spacing, Laterality
against the body part, float32 noise in decimal strings, and CT reconstructions impossibly far
below air without a word."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.helpers import ct_slice_dataset
from mrirecon.containers import Image, ImageGeometry
from mrirecon.io.dicom import save_part10, write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

#: What a scanner's CT series holds that the audit found missing from its reconstruction.
SOURCE = {"PatientName": "Test^CT", "PatientID": "X1", "PatientBirthDate": "19700102",
          "StudyDate": "20240315", "AccessionNumber": "ACC42", "Manufacturer": "ACME",
          "KVP": "120", "PatientPosition": "HFS",
          "StudyInstanceUID": "1.2.840.99999.3.11", "FrameOfReferenceUID": "1.2.840.99999.3.12"}


def scanner_ct_series(folder: Path, slices: int = 3, size: int = 32) -> list[Path]:
    """A CT series as a scanner stores it (HU + 1024 with RescaleIntercept -1024), with patient,
    study and technique attributes: a water disk with a bone dot in air."""
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    hu = np.where(np.hypot(yy, xx) < 0.4 * size, 0.0, -1000.0)
    hu[np.hypot(yy - 3, xx + 4) < 2] = 1000.0
    series = generate_uid()
    paths = []
    for k in range(slices):
        ds = ct_slice_dataset(k, series, hu + 1024 + 10 * k, thickness="5", **SOURCE)
        paths.append(save_part10(ds, folder / f"IM{k:04d}.dcm"))
    return paths


def dciodvfy_errors(paths) -> list[str]:
    errors = []
    for path in paths:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors += [f"{Path(path).name}: {line}" for line in (run.stdout + run.stderr).splitlines()
                   if line.startswith("Error")]
    return errors


def _entry(out: Path) -> dict:
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return entry


def ct_run(src: Path, out: Path, *settings: str) -> dict:
    config = load_pipeline("ct_fbp", ["export.formats=[nifti,dicom]", "report.enabled=false",
                                      *settings])[0]
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    return _entry(out)


# ------------------------------------------------------------------------ export.keep_identity

@pytest.mark.parametrize("keep", [False, True])
def test_a_dicom_inputs_technique_and_kept_identity_reach_its_dicom_output(tmp_path, keep):
    """``--set export.keep_identity=true`` on a CT series: exit 0, no word, and the output kept
    nothing of its source: PatientName 'Test^CT' -> '', new study and frame-of-reference UIDs,
    Manufacturer 'ACME', KVP 120, PatientPosition HFS -> empty, also without the setting (the
    pipeline never passed the source's header to the writer)."""
    src = scanner_ct_series(tmp_path / "series")
    entry = ct_run(tmp_path / "series", tmp_path / "out",
                   f"export.keep_identity={str(keep).lower()}")
    assert not any("keep_identity" in m for m in entry["warnings"] + entry["notes"])
    files = sorted((tmp_path / "out" / "dicom" / "series").glob("*.dcm"))
    assert len(files) == 3
    ds = pydicom.dcmread(files[0])
    first = pydicom.dcmread(src[0])
    # technique always; the positions are the source's patient coordinates
    assert (ds.Manufacturer, float(ds.KVP), ds.PatientPosition) == ("ACME", 120.0, "HFS")
    position = [float(v) for v in ds.ImagePositionPatient]
    assert position == [float(v) for v in first.ImagePositionPatient]
    if keep:
        assert (str(ds.PatientName), ds.PatientID) == ("Test^CT", "X1")
        assert ds.PatientBirthDate == "19700102"
        assert (ds.StudyDate, ds.AccessionNumber) == ("20240315", "ACC42")
        assert ds.StudyInstanceUID == SOURCE["StudyInstanceUID"]
        assert ds.FrameOfReferenceUID == SOURCE["FrameOfReferenceUID"]  # overlays on its source
        assert "PatientIdentityRemoved" not in ds
    else:
        assert (str(ds.PatientName), ds.PatientID, ds.StudyDate) == ("", "", "")
        assert ds.StudyInstanceUID != SOURCE["StudyInstanceUID"]
        assert ds.FrameOfReferenceUID != SOURCE["FrameOfReferenceUID"]
        assert ds.PatientIdentityRemoved == "YES"
        raw = b"".join(f.read_bytes().replace(pydicom.dcmread(f).PixelData, b"") for f in files)
        for secret in (b"Test^CT", b"ACC42", b"19700102", b"20240315", b"1.2.840.99999"):
            assert secret not in raw, secret
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(files) == []


@pytest.mark.parametrize("settings, want", [
    ((), 1), (("export.keep_identity=true",), 1003),
    (("export.keep_identity=true", "export.series_number=77"), 77)])
def test_a_result_kept_in_its_sources_study_gets_a_series_number_of_its_own(tmp_path, settings,
                                                                              want):
    """Fails if a result that ``keep_identity`` puts into the scanner's study is numbered as
    the source series (every export was SeriesNumber 1: two results of a series 1 made three
    series 1 in one study), or if ``export.series_number`` is not written."""
    scanner_ct_series(tmp_path / "series")
    for path in (tmp_path / "series").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = 3
        ds.save_as(path)
    ct_run(tmp_path / "series", tmp_path / "out", *settings)
    files = sorted((tmp_path / "out" / "dicom" / "series").glob("*.dcm"))
    assert {int(pydicom.dcmread(f).SeriesNumber) for f in files} == {want}


@pytest.mark.parametrize("value", [-1, 2**31])
def test_a_series_number_outside_dicoms_range_is_refused_at_load(value):
    """Fails if ``export.series_number`` outside 0 .. 2**31 - 1 (DICOM's IS) is taken."""
    with pytest.raises(ConfigError, match=r"export\.series_number"):
        load_pipeline("ct_fbp", [f"export.series_number={value}"])


def test_keep_identity_says_what_inputs_without_a_dicom_header_keep(ct_dir, mri_file, tmp_path):
    """A LoDoPaB file (no patient attributes) and a fastMRI file (an anonymised patient_id) under
    ``export.keep_identity=true``: no word, and PatientIdentityRemoved was left out because the
    flag was given, though nothing had been kept."""
    entry = ct_run(ct_dir / "observation_test_000.hdf5", tmp_path / "ct",
                   "export.keep_identity=true")
    assert any("export.keep_identity=true has nothing to keep" in w
               for w in entry["warnings"]), entry
    ct = sorted((tmp_path / "ct" / "dicom" / "observation_test_000").glob("*.dcm"))
    assert pydicom.dcmread(ct[0]).PatientIdentityRemoved == "YES"

    import h5py

    with h5py.File(mri_file, "r") as h5:
        patient_id = str(h5.attrs["patient_id"])
    assert patient_id
    config = load_pipeline("mri_cs", [
        "reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
        "export.formats=[dicom]", "report.enabled=false", "export.keep_identity=true"])[0]
    assert run_pipeline(config, [str(mri_file)], tmp_path / "mr", progress=False) == 0
    entry = _entry(tmp_path / "mr")
    assert any("keeps its patient ID (PatientID)" in n for n in entry["notes"]), entry
    # named, not quoted (audit b26): the ID was in the log, report.html, provenance.json and
    # the .status record, the files people share
    shared = [tmp_path / "mr" / "provenance.json", *(tmp_path / "mr" / ".status").rglob("*")]
    assert patient_id not in mri_file.name and all(
        patient_id not in p.read_text() for p in shared if p.is_file()), patient_id
    mr = sorted((tmp_path / "mr" / "dicom" / mri_file.stem).glob("*.dcm"))
    ds = pydicom.dcmread(mr[0])
    assert ds.PatientID == patient_id and "PatientIdentityRemoved" not in ds
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors([ct[0], mr[0]]) == []


def test_keep_identity_without_a_source_de_identifies(tmp_path):
    """The writer left PatientIdentityRemoved out whenever ``keep_identity`` was given, even
    with no source to keep anything from."""
    image = Image(torch.rand(2, 8, 8), ImageGeometry(spacing=(2.0, 1.0, 1.0)))
    ds = pydicom.dcmread(write_dicom_series(image, tmp_path, keep_identity=True)[0])
    assert ds.PatientIdentityRemoved == "YES"


# --------------------------------------------------------------------------------- CT window

def test_the_ct_window_is_not_widened_by_a_few_diverged_pixels(tmp_path):
    """ct_pnp's -2862 .. 3960 HU got a window 6822 HU wide (the full range), where its 0.5-99.5
    percentiles span -1042 .. 1093: a grey image in every viewer."""
    g = torch.Generator().manual_seed(0)
    hu = torch.where(torch.rand(2, 64, 64, generator=g) < 0.5, -1000.0, 40.0)
    hu = hu + 20 * torch.randn(2, 64, 64, generator=g)
    hu.view(-1)[:12] = -2900.0
    hu.view(-1)[-12:] = 4000.0
    image = Image(hu, ImageGeometry(spacing=(2.0, 0.7, 0.7)), kind="hu", modality="CT")
    ds = pydicom.dcmread(write_dicom_series(image, tmp_path)[0])
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    lo, hi = np.percentile(hu.numpy(), (0.5, 99.5))
    assert center - width / 2 == pytest.approx(lo, abs=1)
    assert center + width / 2 == pytest.approx(hi, abs=1)
    assert -1100 < center - width / 2 and center + width / 2 < 200
    assert len(ds.WindowCenter.original_string.strip()) <= 6  # -477.1, not -477.12345678901


# ------------------------------------------------------------------- one slice, spacing, DS

def test_a_one_slice_ct_series_keeps_its_slice_spacing(tmp_path):
    """A one-slice CT series (spacing 5 mm, thickness 2 mm): our NIfTI said 5 mm, the DICOM had
    no SpacingBetweenSlices (written for MR only), so dcm2niix and our reader took 2 mm."""
    from mrirecon.io.nifti import write_nifti
    import nibabel as nib

    geometry = ImageGeometry(spacing=(5.0, 0.7, 0.7), origin=(-100.0, -120.0, 55.0),
                             slice_thickness=2.0)
    image = Image(torch.rand(1, 8, 9) * 2000 - 1000, geometry, kind="hu", modality="CT")
    (path,) = write_dicom_series(image, tmp_path / "dcm")
    ds = pydicom.dcmread(path)
    assert (float(ds.SpacingBetweenSlices), float(ds.SliceThickness)) == (5.0, 2.0)
    assert read_dicom_series(tmp_path / "dcm").geometry.spacing[0] == 5.0
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors([path]) == []
    if not shutil.which("dcm2niix"):
        pytest.skip("dcm2niix not installed")
    write_nifti(image, tmp_path / "ours.nii")
    (tmp_path / "conv").mkdir()
    subprocess.run(["dcm2niix", "-b", "n", "-z", "n", "-f", "conv", "-o", str(tmp_path / "conv"),
                    str(tmp_path / "dcm")], check=True, capture_output=True, timeout=120)
    theirs = nib.load(tmp_path / "conv" / "conv.nii").header.get_zooms()[2]
    ours = nib.load(tmp_path / "ours.nii").header.get_zooms()[2]
    assert float(theirs) == pytest.approx(float(ours)) == pytest.approx(5.0)


def test_decimal_strings_carry_no_float32_noise(tmp_path):
    """An ISMRMRD radial volume wrote SpacingBetweenSlices '4.32999992370605' (a float32 4.33)
    beside SliceThickness '4.33'; values with digits of their own keep them."""
    f32 = lambda v: float(np.float32(v))  # noqa: E731 - what a float32 header field gives
    geometry = ImageGeometry(spacing=(f32(4.33), f32(0.7), 0.123456789),
                             origin=(f32(-136.37), f32(-10.98), 125.385987150216),
                             slice_thickness=4.33)
    paths = write_dicom_series(Image(torch.rand(2, 6, 5), geometry), tmp_path)
    raw = pydicom.dcmread(paths[0])
    assert raw.SpacingBetweenSlices.original_string.strip() == "4.33"
    assert [v.original_string.strip() for v in raw.PixelSpacing] == ["0.7", "0.123456789"]
    assert [v.original_string.strip() for v in raw.ImagePositionPatient] == [
        "-136.37", "-10.98", "125.385987150216"]
    back = read_dicom_series(tmp_path).geometry
    np.testing.assert_allclose(back.spacing, geometry.spacing, rtol=1e-7)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(paths) == []


# ---------------------------------------------------------------------- Laterality, ImageType

def test_laterality_follows_the_body_part(tmp_path):
    """A source's BodyPartExamined HEAD without Laterality gave an empty Laterality beside it:
    an error for dciodvfy (type 2C present when the part is unpaired). Absent only then: with
    no body part an absent one is the error, so an unknown one stays empty."""
    for body_part, laterality, written in [("HEAD", None, None), ("KNEE", "R", "R"),
                                           (None, None, "")]:
        src = Dataset()
        src.Modality = "MR"
        if body_part:
            src.BodyPartExamined = body_part
        if laterality:
            src.Laterality = laterality
        image = Image(torch.rand(2, 8, 8), ImageGeometry(spacing=(2.0, 1.0, 1.0)))
        paths = write_dicom_series(image, tmp_path / str(body_part), source_dataset=src)
        ds = pydicom.dcmread(paths[0])
        assert (ds.Laterality if "Laterality" in ds else None) == written, body_part
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(paths) == [], body_part


# ------------------------------------------------------------------------ CT far below air

def test_ct_values_far_below_air_are_counted():
    from mrirecon.pipeline.ct_plausibility import BELOW_AIR_PIXELS, below_air_note

    hu = torch.full((2, 64, 64), -1000.0)
    hu[0, :4, :4] = -1450.0  # noise of an FBP reaches -1251 HU: not counted
    hu.view(-1)[-BELOW_AIR_PIXELS:] = -2000.0  # a handful: not said
    assert below_air_note(hu, "pnp_dpir") is None
    hu[1, 10, :52] = torch.linspace(-2862, -1600, 52)
    msg = below_air_note(hu, "pnp_dpir")
    assert msg is not None and msg.startswith("62 pixels (0.76%; slice 1) read -2862 to -1600 HU")
    assert "reconstruct.method 'pnp_dpir'" in msg


def test_a_ct_reconstruction_far_below_air_gets_a_note(tmp_path, monkeypatch):
    """ct_pnp at 30 views wrote -2862 .. 3960 HU (217 pixels below -1100, 52 below -1500) with no
    word: the plausibility checks look at the input's FBP only. ct_fbp's own output is quiet."""
    scanner_ct_series(tmp_path / "series", size=48)
    entry = ct_run(tmp_path / "series", tmp_path / "plain")
    assert not any("below -1500 HU" in n for n in entry["notes"]), entry["notes"]

    import mrirecon.pipeline.ct_hu as ct_hu

    real = ct_hu.hu_volumes

    def diverged(*args):
        hu, *rest = real(*args)
        hu = hu.clone()
        hu[1, 5, :30] = -2900.0  # a denoiser outside its range
        return (hu, *rest)

    monkeypatch.setattr(ct_hu, "hu_volumes", diverged)
    entry = ct_run(tmp_path / "series", tmp_path / "out")
    assert any(n.startswith("series: 30 pixels (") and "slice 1) read -2900 to -2900 HU" in n
               for n in entry["notes"]), entry["notes"]
