"""``export.keep_identity`` on raw data: the patient, study and frame of reference an ISMRMRD
header holds reach the DICOM series, and only with the setting."""

from __future__ import annotations

import shutil

import pydicom
import pytest
import torch

from mrirecon.containers import Image, ImageGeometry
from mrirecon.io import write_dicom_series
from mrirecon.io.ismrmrd_header import parse_ismrmrd_header
from tests.helpers import ismrmrd_xml

IDENTITY_XML = """ <subjectInformation>
  <patientName>Doe^Jane</patientName>
  <patientWeight_kg>61.5</patientWeight_kg>
  <patientID>PID-7</patientID>
  <patientBirthdate>1970-01-02</patientBirthdate>
  <patientGender>F</patientGender>
 </subjectInformation>
 <studyInformation>
  <studyDate>2024-03-15</studyDate>
  <studyTime>08:30:05</studyTime>
  <studyID>S42</studyID>
  <accessionNumber>4242</accessionNumber>
  <studyInstanceUID>1.2.840.99999.1</studyInstanceUID>
 </studyInformation>
 <measurementInformation>
  <frameOfReferenceUID>1.2.840.99999.2</frameOfReferenceUID>
 </measurementInformation>
"""
SECRETS = (b"Doe^Jane", b"19700102", b"20240315", b"4242", b"1.2.840.99999")


def _header():
    pytest.importorskip("ismrmrd")
    xml = ismrmrd_xml(nx=16, ny=16, coils=2, fov_mm=200.0)
    at = xml.index("<acquisitionSystemInformation>") - 1
    return parse_ismrmrd_header(xml[:at] + "\n" + IDENTITY_XML + xml[at:])


@pytest.mark.parametrize("keep", [True, False])
def test_an_ismrmrd_headers_identity_is_kept_only_with_keep_identity(tmp_path, keep):
    """Fails if ``keep_identity`` drops the patient name, birth date, sex, weight, study date /
    time / ID, accession number, study and frame-of-reference UIDs an ISMRMRD header holds (the
    series landed in a new study and frame of reference: no viewer linked it with the scanner's
    series), or if any of them reaches the files without the setting."""
    header = _header()
    image = Image(torch.rand(2, 16, 16), ImageGeometry(spacing=(5.0, 12.5, 12.5)))
    files = write_dicom_series(image, tmp_path, keep_identity=keep, header=header,
                               patient={"PatientID": "PID-7"} if keep else None)
    ds = pydicom.dcmread(files[0])
    if keep:
        assert (ds.PatientName, ds.PatientBirthDate, ds.PatientSex) == ("Doe^Jane", "19700102", "F")
        assert float(ds.PatientWeight) == 61.5 and ds.PatientID == "PID-7"
        assert (ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber) == (
            "20240315", "083005", "S42", "4242")
        assert ds.StudyInstanceUID == "1.2.840.99999.1"
        assert ds.FrameOfReferenceUID == "1.2.840.99999.2"
        assert "PatientIdentityRemoved" not in ds
    else:
        assert ds.PatientIdentityRemoved == "YES"
        raw = b"".join(f.read_bytes().replace(pydicom.dcmread(f).PixelData, b"") for f in files)
        for secret in SECRETS:
            assert secret not in raw, secret
    if shutil.which("dciodvfy"):
        from tests.robustness.test_hostile_dicom_export import dciodvfy_errors

        assert dciodvfy_errors(files) == []


def test_values_that_do_not_fit_their_dicom_representation_are_left_out():
    """Fails if a malformed date, sex or UID of the header is written (dciodvfy refuses it), or a
    long description is not cut to its value representation's length."""
    from mrirecon.io.dicom_technique import mr_identity

    header = _header()
    header.technique.update(patient_birthdate="02.01.1970", patient_gender="female",
                            study_instance_uid="uid-1", study_description="x" * 80)
    got = mr_identity(header)
    assert not {"PatientBirthDate", "PatientSex", "StudyInstanceUID"} & set(got)
    assert got["StudyDescription"] == "x" * 64 and got["PatientName"] == "Doe^Jane"


def test_every_identity_field_the_header_reads_has_its_dicom_keyword():
    """Fails if the ISMRMRD paths read as identity and the DICOM keywords written for them name
    different fields (one read and never written, or written from nothing)."""
    from mrirecon.io.dicom_technique import IDENTITY_KEYWORDS
    from mrirecon.io.ismrmrd_header import IDENTITY

    assert set(IDENTITY) == set(IDENTITY_KEYWORDS)
