"""Non-square pixels and rectangular fields of view (audit s20 "aniso"): a ``Header`` built without
``geometry`` (the README's own-data recipe) took 1 mm voxels placed in scanner coordinates; ISMRMRD
phase oversampling with a phase resolution below 100 % labelled its columns with the recon voxel;
a fastMRI-layout file narrower than its recon matrix over the same phase FOV was cut square and
labelled so without a word."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.containers import Header, Image, ImageGeometry
from mrirecon.io import read_fastmri, read_ismrmrd, write_fastmri
from mrirecon.io.fastmri import FastMRIFile, narrow_phase_note
from mrirecon.io.ismrmrd_encoding import interpolate_phase, phase_voxel_problem
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header

# ---- 1: a Header without geometry= ------------------------------------------------------------

H, W, C = 128, 96, 4
FOV = (220.0, 165.0, 5.0)


def _readme_header(**changes) -> Header:
    """README.md's "MRI from your own k-space" header: FOVs, no geometry."""
    return Header(encoded_matrix=(H, W, 1), recon_matrix=(H, W, 1), encoded_fov_mm=FOV,
                  recon_fov_mm=FOV, num_coils=C, **changes)


def test_a_header_without_geometry_takes_the_fov_voxels_unplaced():
    """The default was ImageGeometry(): 1 x 1 x 1 mm, placed in scanner coordinates."""
    h = _readme_header()
    assert h.geometry.spacing == pytest.approx((5.0, 220 / 128, 165 / 96), rel=1e-12)
    assert h.geometry.placed is False
    # the header reader's rule for a header without the mrirecon.geometry parameter
    xml = re.sub(r"<userParameterString>\s*<name>mrirecon.geometry</name>.*?"
                 r"</userParameterString>", "", header_to_xml(h), flags=re.S)
    assert "mrirecon.geometry" not in xml and parse_ismrmrd_header(xml).geometry == h.geometry
    assert parse_ismrmrd_header(header_to_xml(h)) == h
    # a derived geometry follows a new recon grid; a given one is kept
    g = h.with_(num_coils=8).with_(recon_matrix=(64, 48, 1),
                                   recon_fov_mm=(110.0, 82.5, 5.0)).geometry
    assert g.spacing == pytest.approx((5.0, 110 / 64, 82.5 / 48))
    placed = ImageGeometry(spacing=(5.0, 220 / 128, 165 / 96), origin=(1.0, 2.0, 3.0))
    assert h.with_(geometry=placed).with_(recon_matrix=(64, 48, 1)).geometry == placed


def test_a_header_without_a_fov_has_1_mm_placeholder_voxels_that_round_trip_silently():
    """No FOV given (the 1 mm default): the voxels are unknown, 1 mm placeholders, not the
    1 mm FOV divided by the matrix (1/64 mm), and the written header reads back without a
    contradiction note, its axes marked unknown as a scanner's FOV of 0 (the placeholders were
    written as the mrirecon.geometry parameter and read back as known voxel sizes)."""
    h = Header(encoded_matrix=(64, 64, 1), recon_matrix=(64, 64, 1))
    assert h.geometry == ImageGeometry(spacing=(1.0, 1.0, 1.0), placed=False)
    assert h.recon_fov_mm == h.encoded_fov_mm == (0.0, 0.0, 0.0)  # unknown, as the XML says
    xml = header_to_xml(h)
    assert "mrirecon.geometry" not in xml
    back = parse_ismrmrd_header(xml)
    assert back == h and back.geometry == h.geometry
    assert "geometry_spacing_note" not in back.extra and "readout_voxel_note" not in back.extra
    assert back.extra["fov_unknown_axes"] == ("x", "y", "z")
    # encoded x above recon x (readout oversampling) over no FOV: no readout contradiction
    wide = Header(encoded_matrix=(128, 64, 1), recon_matrix=(64, 64, 1))
    assert "readout_voxel_note" not in parse_ismrmrd_header(header_to_xml(wide)).extra


def _scanner_xml(h: Header) -> str:
    """``header_to_xml(h)`` without the mrirecon.geometry parameter (a scanner's XML)."""
    return re.sub(r"<userParameterString>\s*<name>mrirecon.geometry</name>.*?"
                  r"</userParameterString>", "", header_to_xml(h), flags=re.S)


def test_a_header_with_an_unknown_fov_axis_is_written_and_read_back_unknown(tmp_path, monkeypatch):
    """The README recipe with the y FOV unknown (0): its 1 mm placeholder columns were written as
    the mrirecon.geometry parameter, read back as known (no extra["fov_unknown_axes"]), exported
    to NIfTI as 1 mm without "1 mm was assumed", and the PNG panels drawn 1.72x too tall."""
    from mrirecon.io import png
    from tests.robustness.test_hostile_inputs import mri_config, run_one

    h = Header(encoded_matrix=(H, W, 1), recon_matrix=(H, W, 1), encoded_fov_mm=(220.0, 0.0, 5.0),
               recon_fov_mm=(220.0, 0.0, 5.0), num_coils=C)
    assert h.geometry.spacing == pytest.approx((5.0, 220 / 128, 1.0), rel=1e-12)
    back = parse_ismrmrd_header(header_to_xml(h))
    scanner = parse_ismrmrd_header(_scanner_xml(h))
    assert back.extra["fov_unknown_axes"] == scanner.extra["fov_unknown_axes"] == ("y",)
    assert back == h and back.geometry == scanner.geometry == h.geometry
    # a given geometry is still stored and trusted, unknown FOV or not
    placed = ImageGeometry(spacing=(5.0, 220 / 128, 0.9), origin=(1.0, 2.0, 3.0))
    given = parse_ismrmrd_header(header_to_xml(h.with_(geometry=placed)))
    assert given.geometry == placed and "fov_unknown_axes" not in given.extra

    aspects = []
    real = png.save_panel
    monkeypatch.setattr(png, "save_panel", lambda *a, **k: aspects.append(k["aspect"]) or real(*a, **k))
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(1, C, H, W)) + 1j * rng.normal(size=(1, C, H, W))).astype(np.complex64)
    src = write_fastmri(tmp_path / "scan.h5", k, h)
    entry = run_one(mri_config("export.formats=[nifti,png]", "undersample.enabled=false",
                               "preprocess.prewhiten=false"), src, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    assert any("1 mm was assumed along y (columns)" in w for w in entry["warnings"]), entry
    # the panels: a column of unknown width is drawn square, not 220 / 128 mm tall over 1 mm
    assert aspects == [1.0]


def test_the_readme_recipe_round_trips_unplaced_with_its_voxel_size(tmp_path):
    """Written and read back it said 1 x 1 x 1 mm, NIfTI sform_code 1 (scanner), no word."""
    nib = pytest.importorskip("nibabel")
    from mrirecon.io.nifti import write_nifti

    rng = np.random.default_rng(0)
    k = (rng.normal(size=(1, C, H, W)) + 1j * rng.normal(size=(1, C, H, W))).astype(np.complex64)
    ks = read_fastmri(write_fastmri(tmp_path / "scan.h5", k, _readme_header()))
    g = ks.header.geometry
    # float64 FOV / matrix, stored as JSON (repr: exact)
    assert g.spacing == pytest.approx((5.0, 220 / 128, 165 / 96), rel=1e-12)
    assert g.placed is False and "geometry_spacing_note" not in ks.header.extra
    path = write_nifti(Image(data=torch.ones(1, H, W), geometry=g), tmp_path / "scan.nii.gz")
    img = nib.load(path)
    assert int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0
    # pixdim (cols, rows, slices), float32
    np.testing.assert_allclose(img.header.get_zooms(), (165 / 96, 220 / 128, 5.0), rtol=1e-6)


def test_a_stored_geometry_that_contradicts_the_fov_is_noted():
    """A file an earlier mrirecon wrote from such a header holds 1 mm placed voxels in its
    mrirecon.geometry parameter, which the reader trusts over the FOV: kept, and noted."""
    old = _readme_header(geometry=ImageGeometry())  # what the old default wrote
    h = parse_ismrmrd_header(header_to_xml(old))
    assert h.geometry == ImageGeometry()
    note = h.extra["geometry_spacing_note"]
    assert "1 mm a row where reconSpace x is 220 mm over 128, 1.719 mm" in note
    assert "1 mm a column where reconSpace y is 165 mm over 96, 1.719 mm" in note
    # within 1 %: no note (a FOV rounded to the mm); an unknown (0) FOV: nothing to compare
    close = ImageGeometry(spacing=(5.0, 1.005 * 220 / 128, 165 / 96))
    assert "geometry_spacing_note" not in parse_ismrmrd_header(
        header_to_xml(_readme_header(geometry=close))).extra
    zero = _readme_header(geometry=ImageGeometry()).with_(recon_fov_mm=(0.0, 0.0, 0.0))
    assert "geometry_spacing_note" not in parse_ismrmrd_header(header_to_xml(zero)).extra


# ---- 2: ISMRMRD phase oversampling with a phase resolution below 100 % ------------------------

ismrmrd = pytest.importorskip("ismrmrd")
X = ismrmrd.xsd
POSITION = np.array([3.0, -7.0, 11.0])
READ, PHASE = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])


def _points_file(path: Path, lines: int, enc_fov_y: float, recon_y: int, recon_fov_y: float,
                 along_phase=(9.0, -9.0), nx: int = 32) -> Path:
    """Points ``along_phase`` mm from ``POSITION`` along phase (amplitudes 1, 0.7): ``lines``
    encoded lines over ``enc_fov_y`` mm, readout ``2 nx`` samples over ``2 nx`` mm (1 mm), recon
    ``nx`` x ``recon_y`` over ``nx`` x ``recon_fov_y`` mm."""
    ex = 2 * nx

    def space(x, y, fx, fy):
        return X.encodingSpaceType(matrixSize=X.matrixSizeType(x=x, y=y, z=1),
                                   fieldOfView_mm=X.fieldOfViewMm(x=fx, y=fy, z=5.0))

    xml = X.ToXML(X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=2),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=space(ex, lines, float(ex), enc_fov_y),
            reconSpace=space(nx, recon_y, float(nx), recon_fov_y),
            encodingLimits=X.encodingLimitsType(kspace_encoding_step_1=X.limitType(
                minimum=0, maximum=lines - 1, center=lines // 2)),
            trajectory=X.trajectoryType.CARTESIAN)]))
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for line in range(lines):
            kp = (line - lines // 2) / enc_fov_y
            sig = sum((1 - 0.3 * i) * np.exp(-2j * np.pi * kp * d) for i, d in enumerate(along_phase))
            data = np.stack([np.full(ex, sig), np.full(ex, 0.5 * sig)]).astype(np.complex64)
            acq = ismrmrd.Acquisition.from_array(
                data, center_sample=ex // 2, read_dir=tuple(READ), phase_dir=tuple(PHASE),
                slice_dir=tuple(np.cross(PHASE, READ)), position=tuple(POSITION))
            acq.idx.kspace_encode_step_1 = line
            ds.append_acquisition(acq)
    return path


def test_phase_oversampling_with_a_lower_phase_resolution_is_padded_to_the_recon_voxel(tmp_path):
    """22 lines over 43.2 mm (1.96 mm; 20 % phase oversampling, 75 % phase resolution), recon
    y 24 over 36 mm (1.5 mm): the image was made on the 22 columns and labelled 1.5 mm, points at
    +-9 mm exported at +-7.5 mm, no word. Now ky is zero-padded to round(43.2 / 1.5) = 29
    columns (1.49 mm), the recon crop keeps 24, and the points lie within 0.2 voxel."""
    from mrirecon.io.nifti import read_nifti
    from tests.robustness.test_hostile_inputs import mri_config, run_one

    offsets = (9.0, -9.0)
    src = _points_file(tmp_path / "os.h5", lines=22, enc_fov_y=43.2, recon_y=24,
                       recon_fov_y=36.0, along_phase=offsets)
    ks = read_ismrmrd(src)
    assert ks.data.shape[-1] == 29 and ks.header.encoded_matrix[1] == 29
    assert ks.header.geometry.spacing[2] == pytest.approx(1.5)
    assert "zero-padded to 29 columns" in ks.header.extra["phase_interpolation_note"]
    assert "phase_voxel_note" not in ks.header.extra
    config = mri_config("export.formats=[nifti]", "undersample.enabled=false",
                        "preprocess.prewhiten=false")
    entry = run_one(config, src, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    assert any("phase oversampling and a phase resolution below 100 %" in w
               for w in entry.get("warnings", [])), entry
    image = read_nifti(next((tmp_path / "out").rglob("*.nii*")))
    data = image.data.abs().numpy()[0]
    assert data.shape == (32, 24)
    g = image.geometry
    for offset in offsets:
        expected = POSITION + offset * PHASE
        col = (expected - np.asarray(g.origin)) @ np.asarray(g.row_direction) / g.spacing[2]
        row = (expected - np.asarray(g.origin)) @ np.asarray(g.column_direction) / g.spacing[1]
        near = np.where(np.abs(np.arange(data.shape[1]) - col) < 3, data, 0)
        r, c = np.unravel_index(int(np.argmax(near)), data.shape)
        a, b, d = data[r, c - 1: c + 2]  # the peak to a fraction of a voxel (parabola)
        found = c + 0.5 * (a - d) / (a - 2 * b + d)
        # the 1.49 mm columns labelled 1.5 mm: 0.04 voxel at 9 mm; the old label missed by
        # 1.5 mm, one voxel
        assert r == pytest.approx(row) and abs(found - col) < 0.2, (r, found, row, col)


def _header(ey, fe, ry, fr, **extra) -> Header:
    return Header(encoded_matrix=(64, ey, 1), recon_matrix=(64, ry, 1),
                  encoded_fov_mm=(64.0, fe, 5.0), recon_fov_mm=(64.0, fr, 5.0), extra=extra)


@pytest.mark.parametrize("ey, fe, ry, fr, width", [
    (29, 43.5, 24, 36.0, 29),  # phase oversampling alone: 1.5 mm both
    (18, 36.0, 24, 36.0, 24),  # phase resolution 75 % alone: padded to the recon matrix
    (22, 43.2, 24, 36.0, 29),  # both: padded to the recon voxel
    (192, 240.4, 256, 240.0, 256),  # FOVs within rounding: padded to the recon matrix
])
def test_the_columns_end_at_the_recon_voxel(ey, fe, ry, fr, width):
    h = _header(ey, fe, ry, fr)
    out, data, columns, _ = interpolate_phase(h, torch.ones(1, 2, 64, ey),
                                              np.ones((1, ey), bool), None)
    assert data.shape[-1] == width and columns.shape[-1] == width
    assert "phase_voxel_note" not in out.extra
    assert abs(fe / width - fr / ry) <= 0.01 * fr / ry  # the columns are the label, to 1 %
    # the k-space centre on the new grid's centre column, acquired columns inside the padding
    assert bool(data[0, 0, 0, width // 2]) and columns[0].sum() == ey
    assert out.padding_right - out.padding_left == ey


@pytest.mark.parametrize("ey, fe, ry, fr", [
    (80, 240.0, 32, 240.0),  # recon matrix 2.5x coarser over the same FOV: 7.5 mm labels 3 mm
    (64, 240.0, 32, 250.0),  # twice as many lines over a FOV 10 mm off the recon one
    (18, 36.0, 32, 48.0),  # recon voxel finer (1.5 mm) over a wider recon FOV than encoded
])
def test_any_other_phase_voxel_contradiction_is_noted(ey, fe, ry, fr):
    """Left as they are (no rule says which field is wrong), with a warning naming reconSpace
    fieldOfView_mm/y, as the readout's (readout_voxel_problem)."""
    h = _header(ey, fe, ry, fr)
    out, data, _, _ = interpolate_phase(h, torch.ones(1, 2, 64, ey), np.ones((1, ey), bool), None)
    assert data.shape[-1] == ey
    note = out.extra["phase_voxel_note"]
    assert note.startswith("ismrmrd_header/encoding/reconSpace/fieldOfView_mm/y: ")
    assert f"the image columns are {fe / ey:.4g} mm, labelled {fr / ry:.4g} mm" in note
    assert phase_voxel_problem(_header(ey, fe, ry, fr, trajectory="radial"), ey) is None


@pytest.mark.parametrize("ey, fe, ry, fr", [
    (368, 140.0, 320, 140.0),  # fastMRI knee: 15 % phase oversampling left out of the FOV
    (46, 40.0, 40, 40.0),  # the same, scaled down
    (64, 240.4, 32, 240.0),  # 100 % phase oversampling, FOVs within rounding
])
def test_phase_oversampling_left_out_of_the_encoded_fov_is_not_called_a_contradiction(
        ey, fe, ry, fr):
    """siemens_to_ismrmrd writes the encoded y FOV without the phase oversampling when the raw
    data do not give it (and fastMRI's knee headers read so: 368 lines and 320 recon columns,
    both over 140 mm): the recon crop keeps the centre ry columns, which are the labelled
    voxel. Was: "the header contradicts itself ... likely wrong" on a right output."""
    h = _header(ey, fe, ry, fr)
    assert phase_voxel_problem(h, ey) is None
    out, data, _, _ = interpolate_phase(h, torch.ones(1, 2, 64, ey), np.ones((1, ey), bool), None)
    assert data.shape[-1] == ey and "phase_voxel_note" not in out.extra
    knee = Header(encoded_matrix=(640, 368, 1), recon_matrix=(320, 320, 1),
                  encoded_fov_mm=(280.0, 140.0, 4.5), recon_fov_mm=(140.0, 140.0, 3.0))
    assert phase_voxel_problem(knee, 368) is None


# ---- 4: a fastMRI-layout file narrower than its recon matrix over the same phase FOV ----------

def test_a_narrow_fastmri_layout_file_over_the_recon_fov_is_warned(tmp_path):
    """64 rows over 64 mm, 36 lines over 72 mm, recon (64, 48) over (64, 72): cut to 36 x 36
    with 2 mm columns labelled 1.5 mm, no word. fastMRI's own headers set the encoded y FOV to
    the recon one whatever the matrix (the knee's 368 / 320 columns over 140 mm), so a narrow
    "FLAIR 203" header meets the same rule and cannot be told apart: kept as fastMRI reads it
    (test_hostile_fastmri_layout.py), with a warning that says what it costs."""
    h = Header(encoded_matrix=(64, 36, 1), recon_matrix=(64, 48, 1),
               encoded_fov_mm=(64.0, 72.0, 5.0), recon_fov_mm=(64.0, 72.0, 5.0), num_coils=2)
    k = np.ones((1, 2, 64, 36), np.complex64)
    with FastMRIFile(write_fastmri(tmp_path / "rect.h5", k, h)) as f:
        note = f.header.extra["phase_voxel_note"]
    assert "36 phase-encoding columns over 72 mm (2 mm a column)" in note
    assert "columns labelled 1.5 mm" in note and "1.33x" in note
    # the knee's header (recon y below W), a file as wide as its recon matrix: nothing to say
    knee = Header(encoded_matrix=(640, 368, 1), recon_matrix=(320, 320, 1),
                  encoded_fov_mm=(280.0, 140.0, 4.5), recon_fov_mm=(140.0, 140.0, 3.0))
    assert narrow_phase_note(knee) is None
    assert narrow_phase_note(h.with_(encoded_matrix=(64, 48, 1))) is None
