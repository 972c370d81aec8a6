"""MR DICOM of raw data carries the acquisition technique of its ISMRMRD header (manufacturer,
field strength, TR / TE / TI, flip angle, frequency, ...), as scanner DICOM does: was none of
it, so dcm2niix's BIDS sidecar of our series had no MagneticFieldStrength, RepetitionTime,
EchoTime, FlipAngle or Manufacturer although fastMRI and ISMRMRD headers hold them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from mrirecon.containers import Header, Image, ImageGeometry
from mrirecon.io.dicom import write_dicom_series
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header

#: What a Siemens FLAIR's header holds beyond the simulated files' (which carry field strength
#: 3 T, TR, TE, flip angle, protocol name, patient position and frequency, but no vendor).
SCANNER = {"vendor": "SIEMENS", "model": "Skyra", "institution": "St Elsewhere Hospital",
           "sequence_type": "TurboSpinEcho", "inversion_time_ms": 2500.0,
           "echo_spacing_ms": 9.6, "protocol_name": "AXFLAIR"}

XML = """<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <measurementInformation><patientPosition>FFS</patientPosition>
    <protocolName>CORPD_FBK</protocolName></measurementInformation>
  <acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>
    <systemModel>Skyra</systemModel><systemFieldStrength_T>{field}</systemFieldStrength_T>
    <receiverChannels>{channels}</receiverChannels><institutionName>NYU</institutionName>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>{h1}</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>32</x><y>24</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits><contrast><minimum>0</minimum><maximum>{contrasts}</maximum>
      <center>0</center></contrast></encodingLimits>
    <trajectory>cartesian</trajectory>
  </encoding>
  <sequenceParameters><TR>{tr}</TR>{te}<TI>100</TI><flipAngle_deg>{flip}</flipAngle_deg>
    <sequence_type>TurboSpinEcho</sequence_type><echo_spacing>9</echo_spacing>
  </sequenceParameters>
</ismrmrdHeader>"""


def xml(field="2.89362", channels="15", h1="123251815", tr="2750", te="<TE>27</TE>", flip="90",
        contrasts="0") -> str:
    return XML.format(field=field, channels=channels, h1=h1, tr=tr, te=te, flip=flip,
                      contrasts=contrasts)


def image() -> Image:
    return Image(torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(0)),
                 ImageGeometry(spacing=(3.0, 1.0, 1.0)), description="test")


def written(header: Header, tmp_path: Path, **kw) -> Dataset:
    return pydicom.dcmread(write_dicom_series(image(), tmp_path, header=header, **kw)[0])


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = run.stdout + run.stderr
    assert "MRImage" in report
    return [line for line in report.splitlines() if line.startswith("Error")]


def test_header_technique_parsed_and_bad_values_left_out():
    """Every technique field in the header's units; malformed, NaN and negative values are left
    out (were: "expected a float, got 'abc'" refused the whole file for a descriptive field)."""
    h = parse_ismrmrd_header(xml())
    assert (h.field_strength_t, h.repetition_time_ms, h.echo_time_ms, h.flip_angle_deg) == \
        (2.89362, 2750.0, 27.0, 90.0)
    assert h.technique == {
        "vendor": "SIEMENS", "model": "Skyra", "institution": "NYU", "protocol_name": "CORPD_FBK",
        "sequence_type": "TurboSpinEcho", "inversion_time_ms": 100.0, "echo_spacing_ms": 9.0,
        "imaging_frequency_hz": 123251815.0}
    bad = parse_ismrmrd_header(xml(field="-3", channels="many", h1="fast", tr="abc", flip="nan"))
    assert (bad.field_strength_t, bad.repetition_time_ms, bad.flip_angle_deg,
            bad.num_coils) == (None, None, None, None)
    assert "imaging_frequency_hz" not in bad.technique and bad.echo_time_ms == 27.0
    again = parse_ismrmrd_header(header_to_xml(h))  # the technique survives a rewrite
    assert again.technique == h.technique and again == h


def test_writer_maps_the_technique_and_follows_the_identity_profile(tmp_path):
    """DS values of the header's digits; ImagingFrequency in MHz; the site and protocol name only
    with keep_identity; fastMRI's TI of 100 ms (Siemens' default, a spin echo without inversion)
    is no InversionTime; a DICOM source's technique wins."""
    h = parse_ismrmrd_header(xml())
    ds = written(h, tmp_path / "a")
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.PatientPosition) == \
        ("SIEMENS", "Skyra", "FFS")
    raw = {kw: ds[kw].to_json_dict(None, None)["Value"][0] for kw in (
        "MagneticFieldStrength", "RepetitionTime", "EchoTime", "FlipAngle", "ImagingFrequency")}
    assert raw == {"MagneticFieldStrength": 2.89362, "RepetitionTime": 2750, "EchoTime": 27,
                   "FlipAngle": 90, "ImagingFrequency": 123.251815}
    assert (ds.ScanningSequence, ds.SequenceVariant) == ("SE", "SK")
    assert "InversionTime" not in ds
    assert "InstitutionName" not in ds and "ProtocolName" not in ds
    assert ds.PatientIdentityRemoved == "YES"
    kept = written(h, tmp_path / "b", keep_identity=True)
    assert (kept.InstitutionName, kept.ProtocolName) == ("NYU", "CORPD_FBK")
    assert "PatientIdentityRemoved" not in kept  # a kept site is no de-identified series
    flair = h.with_(technique={**h.technique, "protocol_name": "AX_FLAIR",
                               "inversion_time_ms": 2500.0})
    ir = written(flair, tmp_path / "c")
    assert (list(ir.ScanningSequence), float(ir.InversionTime)) == (["SE", "IR"], 2500.0)
    source = Dataset()
    source.Modality, source.Manufacturer, source.RepetitionTime = "MR", "GE", "500"
    mixed = written(h, tmp_path / "d", source_dataset=source)
    assert (mixed.Manufacturer, float(mixed.RepetitionTime)) == ("GE", 500.0)
    assert "MagneticFieldStrength" not in mixed  # nothing of the header beside a source
    if shutil.which("dciodvfy"):
        for path in (tmp_path / "a", tmp_path / "b", tmp_path / "c"):
            assert dciodvfy_errors(path / "slice_0001.dcm") == []


@pytest.mark.parametrize("contrasts, expected", [("0", 27.0), ("1", None)],
                         ids=["one-contrast", "multi-echo"])
def test_several_echo_times_write_the_first_only_for_one_contrast(tmp_path, contrasts, expected):
    h = parse_ismrmrd_header(xml(te="<TE>27</TE><TE>54</TE>", contrasts=contrasts))
    assert h.technique["echo_times_ms"] == (27.0, 54.0)
    assert written(h, tmp_path).EchoTime == expected


def _raw_file(tmp_path: Path, kind: str) -> Path:
    """A simulated fastMRI file whose header holds a Siemens FLAIR's technique, or the same as
    ISMRMRD raw data."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from tests.helpers import fastmri_to_ismrmrd

    (path,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=2, coils=2,
                                   size=(32, 24), seed=5, resolution=2)
    with h5py.File(path, "r+") as f:
        header = parse_ismrmrd_header(f["ismrmrd_header"][()])
        header = header.with_(field_strength_t=2.89362, repetition_time_ms=9000.0,
                              echo_time_ms=86.0, flip_angle_deg=150.0,
                              technique={**header.technique, **SCANNER})
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = header_to_xml(header).encode()
    if kind == "fastmri":
        return Path(path)
    (tmp_path / "raw").mkdir()
    fastmri_to_ismrmrd(Path(path), tmp_path / "raw" / "scan.h5")
    return tmp_path / "raw" / "scan.h5"


@pytest.mark.parametrize("kind, keep", [("fastmri", False), ("ismrmrd", True)])
def test_run_exports_the_technique_to_dcm2niix(tmp_path, kind, keep):
    """`mrirecon run` of raw data: the DICOM series carries the header's technique, dciodvfy
    finds no error and dcm2niix's sidecar has what a scanner series gives it (BIDS seconds)."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    src = _raw_file(tmp_path, kind)
    config = load_pipeline("mri_cs", [
        "reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
        "export.formats=[dicom]", "report.enabled=false",
        f"export.keep_identity={str(keep).lower()}"])[0]
    assert run_pipeline(config, [str(src)], tmp_path / "out", progress=False) == 0
    folder = tmp_path / "out" / "dicom" / src.stem
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    assert (ds.Manufacturer, float(ds.MagneticFieldStrength), float(ds.RepetitionTime)) == \
        ("SIEMENS", 2.89362, 9000.0)
    assert (float(ds.InversionTime), list(ds.ScanningSequence)) == (2500.0, ["SE", "IR"])
    assert ("InstitutionName" in ds) is keep and ("ProtocolName" in ds) is keep
    assert ds.InPlanePhaseEncodingDirection == "ROW"  # the k-space's W: the image's columns axis
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(sorted(folder.glob("*.dcm"))[0]) == []
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not installed")
    out = tmp_path / "conv"
    out.mkdir()
    subprocess.run(["dcm2niix", "-b", "y", "-z", "n", "-f", "conv", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=120)
    sidecar = json.loads((out / "conv.json").read_text())
    assert sidecar["Manufacturer"].upper() == "SIEMENS"
    assert sidecar["ManufacturersModelName"] == "Skyra"
    assert sidecar["MagneticFieldStrength"] == pytest.approx(2.89362)
    assert sidecar["RepetitionTime"] == pytest.approx(9.0)  # seconds in BIDS
    assert sidecar["EchoTime"] == pytest.approx(0.086)
    assert sidecar["InversionTime"] == pytest.approx(2.5)
    assert sidecar["FlipAngle"] == pytest.approx(150)
    assert sidecar["ImagingFrequency"] == pytest.approx(127.732436, rel=1e-5)  # 6 digits
    assert sidecar["PhaseEncodingAxis"] == "i"  # BIDS: along the NIfTI's first (row) axis


def test_mr_technique_single_echo_ir_word_and_lower_case_position():
    """Fails if dicom_technique.py:76 ``len(echoes) > 1`` -> ``> 0``: observable only when
    the header repeats one TE value, if dicom_technique.py:
    69 the ``IR`` word test removed and if dicom_technique.py:112 ``.upper()`` dropped.
    One echo time (repeated TE elements of one value) is EchoTime whatever the contrast limit; a protocol named
    with the word ``IR`` is an inversion recovery (ScanningSequence gets IR, InversionTime the
    TI) while ``IR`` inside a word (FIRST) is not; a patient position in lower case is still a
    defined term."""
    import re

    from mrirecon.io.dicom_technique import mr_technique
    from mrirecon.io.ismrmrd_header import parse_ismrmrd_header
    from tests.io.test_io_dicom_technique import xml

    # several TE elements of one value (two contrasts, one echo time): EchoTime is that value
    header = parse_ismrmrd_header(xml(te="<TE>27</TE><TE>27</TE>", contrasts="1"))
    assert set(header.technique["echo_times_ms"]) == {27.0}
    assert float(mr_technique(header)["EchoTime"]) == 27.0
    no_limits = re.sub(r"<encodingLimits>.*?</encodingLimits>", "", xml(te="<TE>27</TE><TE>27</TE>"),
                       flags=re.S)
    assert float(mr_technique(parse_ismrmrd_header(no_limits))["EchoTime"]) == 27.0

    header = parse_ismrmrd_header(xml())
    tech = {**header.technique, "inversion_time_ms": 2500.0}
    ir = mr_technique(header.with_(technique={**tech, "protocol_name": "t1 ir ax"}))
    assert ir["ScanningSequence"] == ["SE", "IR"] and float(ir["InversionTime"]) == 2500.0
    first = mr_technique(header.with_(technique={**tech, "protocol_name": "FIRST PASS"}))
    assert first["ScanningSequence"] == "SE" and "InversionTime" not in first

    lower = header.with_(extra={**header.extra, "patient_position": " hfs "})
    assert mr_technique(lower)["PatientPosition"] == "HFS"


@pytest.mark.parametrize("trajectory, expected", [
    ("cartesian", "ROW"), ("", "ROW"), ("radial", None), ("spiral", None)])
def test_phase_encoding_direction_only_for_cartesian_data(tmp_path, trajectory, expected):
    """Cartesian k-space (coils, H, W) phase-encodes W, the image's columns axis: ROW. Radial and
    spiral data have no phase-encoding direction, so none is written."""
    text = xml()
    text = (text.replace("<trajectory>cartesian</trajectory>", f"<trajectory>{trajectory}</trajectory>")
            if trajectory else text.replace("<trajectory>cartesian</trajectory>", ""))
    ds = written(parse_ismrmrd_header(text), tmp_path)
    assert ds.get("InPlanePhaseEncodingDirection") == expected


def test_a_chosen_echo_of_a_multi_echo_file_exports_its_echo_time_and_number(tmp_path):
    """Two contrasts (TE 10 and 60 ms), read one at a time with ``counters={"contrast": c}``
    (``--set load.counters.contrast=c``): both series had an empty EchoTime and no EchoNumbers,
    so the two echoes' series could not be told apart. Now: TE of the c-th entry, echo c + 1."""
    import ismrmrd
    import numpy as np

    from mrirecon.io import read_ismrmrd
    from tests.io.test_io_ismrmrd import COILS, ENC_X, ENC_Y, acquisition, cplx, make_xml, write

    text = make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1)
    text = text.replace("<TE>12.5</TE>", "<TE>10.0</TE><TE>60.0</TE>")
    text = text.replace("</encodingLimits>", "<contrast><minimum>0</minimum><maximum>1</maximum>"
                                             "<center>0</center></contrast></encodingLimits>")
    rng = np.random.default_rng(0)
    acqs = []
    for contrast in (0, 1):
        for line in range(ENC_Y):
            acq = acquisition(cplx(rng, COILS, ENC_X), line, 0, center=ENC_X // 2)
            acq.idx.contrast = contrast
            acqs.append(acq)
    write(tmp_path / "echoes.h5", text, acqs)
    assert ismrmrd.xsd.CreateFromDocument(text).sequenceParameters.TE == [10.0, 60.0]
    for contrast, te in ((0, 10.0), (1, 60.0)):
        header = read_ismrmrd(tmp_path / "echoes.h5", counters={"contrast": contrast}).header
        assert header.extra["selected_contrast"] == contrast
        ds = written(header, tmp_path / f"c{contrast}")
        assert (float(ds.EchoTime), int(ds.EchoNumbers)) == (te, contrast + 1)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(tmp_path / f"c{contrast}" / "slice_0001.dcm") == []
    both = parse_ismrmrd_header(text)  # the header alone: which echo is unknown
    unknown = written(both, tmp_path / "both")
    assert unknown.EchoTime is None and "EchoNumbers" not in unknown  # type 2: empty
    one_te = both.with_(technique={k: v for k, v in both.technique.items() if k != "echo_times_ms"},
                        echo_time_ms=10.0)
    for contrast, te in ((0, 10.0), (1, None)):  # a TE list shorter than the contrasts
        chosen = one_te.with_(extra={**one_te.extra, "selected_contrast": contrast})
        ds = written(chosen, tmp_path / f"one{contrast}")
        assert (ds.EchoTime or None, int(ds.EchoNumbers)) == (te, contrast + 1)
