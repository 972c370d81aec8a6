"""ISMRMRD raw data whose acquisition geometry cannot be one volume, or whose header contradicts
itself: each case was read with exit 0 and exported at the wrong place, orientation or voxel
size (or with unmeasured samples taken as data); now it is an error naming the file and the
field, or a warning naming the lines."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.io import DataFormatError, read_ismrmrd
from mrirecon.io.ismrmrd_placement import NORMAL_ANGLE_TOL, ORIENTATION_TOL, POSITION_TOL_MM
from tests.helpers import clone_h5
from tests.robustness.test_hostile_inputs import mri_config, run_one

ismrmrd = pytest.importorskip("ismrmrd")
X = ismrmrd.xsd

ENC_X, ENC_Y, COILS, SLICES, DZ = 16, 12, 2, 3, 5.0
# read_dir x phase_dir is the slice normal; this stack has it along +z (as tests/robustness/
# conftest.py's ismrmrd_file)
AXIAL = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
CORONAL = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
SAGITTAL = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
TURNED = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))  # AXIAL turned 90 deg in plane


def _xml(enc_x=ENC_X, recon_x=ENC_X, fov_x=160.0, recon_fov_x=None, slices=SLICES) -> str:
    def space(x, fov):
        return X.encodingSpaceType(matrixSize=X.matrixSizeType(x=x, y=ENC_Y, z=1),
                                   fieldOfView_mm=X.fieldOfViewMm(x=fov, y=120.0, z=DZ))

    return X.ToXML(X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=COILS),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=space(enc_x, fov_x),
            reconSpace=space(recon_x, fov_x if recon_fov_x is None else recon_fov_x),
            encodingLimits=X.encodingLimitsType(
                kspace_encoding_step_1=X.limitType(minimum=0, maximum=ENC_Y - 1, center=ENC_Y // 2),
                slice=X.limitType(minimum=0, maximum=slices - 1, center=0)),
            trajectory=X.trajectoryType.CARTESIAN)]))


def _write(path: Path, *, slices=(0, 1, 2), dirs=None, positions=None, span=None,
           xml=None, enc_x=ENC_X) -> Path:
    """Slices ``slices`` of ``ENC_Y`` lines each, 2 coils, a smooth k-space (a Gaussian blob's)
    with noise. ``dirs[s]`` = (read, phase, slice) directions (default AXIAL), ``positions[s]``
    the slice centre (default ``(0, 0, DZ * s)``), ``span(s, line)`` = (first sample, count) of
    the readout (default all ``enc_x``)."""
    rng = np.random.default_rng(7)
    x = np.linspace(-1, 1, enc_x)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml or _xml(enc_x=enc_x, recon_x=enc_x, fov_x=10.0 * enc_x))
        for s in slices:
            for line in range(ENC_Y):
                signal = np.exp(-((x * 3) ** 2)) * np.exp(-(((line - ENC_Y // 2) / 3) ** 2))
                data = (signal[None] * (1 + 0.1 * rng.normal(size=(COILS, enc_x)))).astype(np.complex64)
                first, count = span(s, line) if span else (0, enc_x)
                read, phase, normal = dirs[s] if dirs else AXIAL
                acq = ismrmrd.Acquisition.from_array(
                    np.ascontiguousarray(data[:, first: first + count]),
                    center_sample=enc_x // 2 - first, read_dir=read, phase_dir=phase,
                    slice_dir=normal, position=positions[s] if positions else (0.0, 0.0, DZ * s))
                acq.idx.kspace_encode_step_1 = line
                acq.idx.slice = s
                ds.append_acquisition(acq)
    return path


def _refused(path: Path, **kwargs) -> str:
    with pytest.raises(DataFormatError) as err:
        read_ismrmrd(path, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    return message


# 1. slices of different orientation --------------------------------------------------------

@pytest.mark.parametrize("case, dirs, field", [
    # a 3-plane localizer: axial, coronal, sagittal slices through one point
    ("localizer", [AXIAL, CORONAL, SAGITTAL], "phase_dir"),
    # one slice of a stack turned 90 degrees in its plane (read and phase swapped)
    ("turned", [AXIAL, TURNED, AXIAL], "read_dir"),
])
def test_slices_of_different_orientation_are_refused(tmp_path, case, dirs, field):
    """Only the first acquisition's directions were used: the localizer was exported as one axial
    volume, the turned slice written as if it were axial (exit 0)."""
    positions = [(0.0, 0.0, 0.0)] * 3 if case == "localizer" else None
    path = _write(tmp_path / f"{case}.h5", dirs=dirs, positions=positions)
    message = _refused(path)
    # the first acquisition of idx.slice 1 (ENC_Y lines per slice) is the first that differs
    assert f": data[{ENC_Y}].head.{field}: " in message
    assert "(idx.slice 1) differs from" in message and "data[0] (idx.slice 0)" in message
    assert "not one volume" in message and "load.counters.slice=N" in message
    # what the message suggests works, and places the slice in its own orientation
    alone = read_ismrmrd(path, counters={"slice": 1})
    read, phase, _ = dirs[1]
    assert alone.data.shape[0] == 1
    np.testing.assert_array_equal(alone.header.geometry.orientation, phase + read)


def test_directions_within_rounding_of_each_other_are_one_volume(tmp_path):
    """Directions differing between slices by less than ORIENTATION_TOL (cosines rounded to the
    float32 or 5 decimals a converter writes) are one stack; a 1 degree tilt is not."""
    small = ORIENTATION_TOL / 2  # e.g. 5-decimal rounding of a cosine: 5e-6, well below
    nudged = ((0.0, 1.0, 0.0), (1.0, small, 0.0), (-small, 0.0, 1.0))
    ks = read_ismrmrd(_write(tmp_path / "ok.h5", dirs=[AXIAL, nudged, AXIAL]))
    assert ks.data.shape[0] == SLICES
    tilt = np.deg2rad(1.0)  # sin(1 deg) = 0.017: 170 times the tolerance
    tilted = ((0.0, 1.0, 0.0), (np.cos(tilt), 0.0, np.sin(tilt)), (-np.sin(tilt), 0.0, np.cos(tilt)))
    message = _refused(_write(tmp_path / "tilt.h5", dirs=[AXIAL, tilted, AXIAL]))
    assert f"data[{ENC_Y}].head.phase_dir" in message


@pytest.mark.parametrize("slices", [1, 2])
@pytest.mark.parametrize("read, phase, field, problem", [
    # parallel unit vectors (a broken export): no slice normal phase x read
    ((0.0, 1.0, 0.0), (0.0, 1.0, 0.0), "read_dir / phase_dir", "not orthogonal"),
    ((0.0, 0.5, 0.0), (1.0, 0.0, 0.0), "read_dir", "length 0.5, not 1"),
    ((0.0, 1.0, 0.0), (0.0, 0.0, 0.0), "phase_dir", "length 0, not 1"),
])
def test_directions_that_are_set_but_not_orthonormal_are_refused(tmp_path, slices, read, phase,
                                                                 field, problem):
    """Parallel ``read_dir`` and ``phase_dir``: 2 slices were refused as lying "nan mm off the
    slice normal (allowed nan mm)" after a bare numpy "RuntimeWarning: invalid value encountered
    in divide"; 1 slice was read as unplaced without a word. One check for both functions
    (``ismrmrd_placement.directions_set``)."""
    import warnings

    path = _write(tmp_path / "dirs.h5", slices=range(slices), dirs=[(read, phase, AXIAL[2])] * 2,
                  xml=_xml(fov_x=10.0 * ENC_X, slices=slices))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way
        message = _refused(path)
    assert f": data[0].head.{field}: " in message and problem in message, message
    assert "nan" not in message


def test_directions_all_zero_are_not_set(tmp_path):
    """All-zero directions mean "not set" (what writers without a geometry store): the image is
    unplaced, its spacing the header's."""
    zero = ((0.0, 0.0, 0.0),) * 3
    ks = read_ismrmrd(_write(tmp_path / "zero.h5", dirs=[zero] * SLICES))
    assert ks.data.shape[0] == SLICES and not ks.header.geometry.placed
    assert ks.header.geometry.spacing[0] == DZ


# 2. slices at one non-zero position ---------------------------------------------------------

def test_slices_at_one_nonzero_position_are_refused(tmp_path):
    """Three slices at (0, 0, 30) (repetitions labelled as slices) were taken for "positions not
    set" and stacked 5 mm apart from the header's FOV (exit 0)."""
    message = _refused(_write(tmp_path / "same.h5", positions=[(0.0, 0.0, 30.0)] * 3))
    assert ": dataset/data[].head.position: " in message
    assert "the 3 slices (idx.slice 0..2) all lie at 30.000 mm along the slice normal" in message
    assert "coinciding slices are not one volume" in message
    # all zero means "not set": the header's slice spacing (FOV z / z = 5 mm) stands
    ks = read_ismrmrd(_write(tmp_path / "unset.h5", positions=[(0.0, 0.0, 0.0)] * 3))
    assert ks.data.shape[0] == SLICES and ks.header.geometry.spacing[0] == DZ


# 3. slices shifted in their plane -------------------------------------------------------------

def test_slices_shifted_in_plane_are_refused(tmp_path):
    """Positions moving 10 mm along the readout per 5 mm slice: the in-plane offset went into
    the slice spacing (sqrt(10^2 + 5^2) = 11.2 mm) and every slice after the first was exported
    where it is not (exit 0)."""
    shifted = [(10.0 * s, 0.0, DZ * s) for s in range(3)]
    message = _refused(_write(tmp_path / "shift.h5", positions=shifted))
    # slice 2 lies farthest (20 mm) off the normal through slice 0; its first acquisition
    assert f": data[{2 * ENC_Y}].head.position: idx.slice 2 at [20.0, 0.0, 10.0] lies 20.000 mm " \
           "off the slice normal through idx.slice 0" in message
    assert "not one volume" in message


def test_an_oblique_stack_within_rounding_is_read_with_its_spacing_along_the_normal(tmp_path):
    """An oblique stack whose centres follow the normal, each nudged in its plane by less than
    the tolerance (positions are float32, directions rounded): read, spacing = the step along the
    normal. Nudged by more than it: refused."""
    c, s_ = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
    read, phase = np.array([0.0, 1.0, 0.0]), np.array([c, 0.0, s_])
    normal = np.cross(phase, read)
    dirs = [(tuple(read), tuple(phase), tuple(normal))] * 3
    origin = np.array([2.5, -4.0, 1.25])
    # allowed off the line: max(POSITION_TOL_MM, 1e-3 * spacing) + NORMAL_ANGLE_TOL * distance
    allowed = [max(POSITION_TOL_MM, 1e-3 * DZ) + NORMAL_ANGLE_TOL * DZ * k for k in range(3)]

    def stack(scale):  # slice 1 moved along its readout by scale x what it is allowed
        return [tuple(origin + DZ * k * normal + (scale * allowed[k] * read if k == 1 else 0))
                for k in range(3)]

    ks = read_ismrmrd(_write(tmp_path / "oblique.h5", dirs=dirs, positions=stack(0.9)))
    # float32 positions, each coordinate within 2^-24 of its magnitude: a step along the unit
    # normal is off by up to 2 sqrt(3) of that; float32 directions add 2^-24 of the step. The
    # distance between the centres (with the in-plane shift) exceeds DZ by shift^2 / (2 DZ): 2.6e-5
    bound = 2 * np.sqrt(3) * 2.0 ** -24 * (np.abs(origin).max() + 2 * DZ) + 2.0 ** -24 * DZ
    assert abs(ks.header.geometry.spacing[0] - DZ) <= bound
    message = _refused(_write(tmp_path / "off.h5", dirs=dirs, positions=stack(2.0)))
    assert f"data[{ENC_Y}].head.position: idx.slice 1" in message


def test_radial_slices_shifted_in_plane_are_refused(tmp_path):
    """The non-Cartesian reader places slices the same way (it gave 11.2 mm slices too)."""
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    (path,) = simulate_noncartesian_dataset(tmp_path / "sim", "radial", volumes=1, slices=3,
                                            coils=2, size=(16, 16), readouts=12, snr_db=None)
    base = read_ismrmrd(path)
    assert base.data.shape[0] == 3
    with h5py.File(path) as h5:
        xml, records = h5["dataset/xml"][0], h5["dataset/data"][()]
    heads = records["head"]
    shift = 10.0 * heads["idx"]["slice"][:, None] * heads["read_dir"]
    heads["position"] += shift.astype(np.float32)
    records["head"] = heads
    bad = tmp_path / "shifted.h5"
    with h5py.File(bad, "w") as h5:
        group = h5.create_group("dataset")
        group.create_dataset("xml", data=np.array([xml], dtype=h5py.string_dtype("utf-8")))
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    message = _refused(bad)
    assert re.search(r": data\[\d+\]\.head\.position: idx\.slice [02] at .* lies 20\.000 mm off "
                     r"the slice normal", message), message


# 4. a header whose readout voxel sizes contradict each other --------------------------------

def test_recon_fov_that_contradicts_the_encoded_readout_voxel_is_warned(tmp_path):
    """Encoded 32 over 320 mm (10 mm rows), recon 16 over 320 mm instead of 160: the pipeline
    kept 16 rows of 10 mm and labelled them 20 mm (exit 0, no word). A warning, not a refusal:
    headers this rule has not met (a recon matrix interpolated by the scanner) keep their
    pixels, and the user learns the label may be wrong."""
    xml = _xml(enc_x=32, recon_x=16, fov_x=320.0, recon_fov_x=320.0)
    ks = read_ismrmrd(_write(tmp_path / "fov.h5", xml=xml, enc_x=32), crop_readout_oversampling=True)
    assert ks.header.extra["readout_voxel_note"].startswith(
        "ismrmrd_header/encoding/reconSpace/fieldOfView_mm/x: 320 mm over the recon matrix x = 16 "
        "is 20 mm a readout row, but the encoded space samples 320 mm over x = 32, 10 mm a row")
    # consistent (fastMRI-style 2x readout oversampling), or with FOVs rounded to the mm: no note
    for recon_fov_x, fov_x in ((160.0, 320.0), (160.0, 321.0)):
        xml = _xml(enc_x=32, recon_x=16, fov_x=fov_x, recon_fov_x=recon_fov_x)
        ks = read_ismrmrd(_write(tmp_path / f"ok{fov_x}.h5", xml=xml, enc_x=32),
                          crop_readout_oversampling=True)
        assert ks.data.shape[-2] == 16 and ks.header.geometry.spacing[1] == 10.0
        assert "readout_voxel_note" not in ks.header.extra


def test_fastmri_recon_fov_that_contradicts_the_encoded_readout_voxel_is_warned_by_the_run(
        mri_file, tmp_path):
    """fastMRI files store the same header (without the geometry user parameter the simulated
    files add, which gives the voxel grid instead): the run warns naming the field, and writes
    the image."""
    from mrirecon.io.fastmri import FastMRIFile

    with FastMRIFile(mri_file) as f:
        h = f.header
    (ex, rx), (fe, fr) = (h.encoded_matrix[0], h.recon_matrix[0]), (h.encoded_fov_mm[0], h.recon_fov_mm[0])
    assert abs(fe / ex - fr / rx) < 1e-9  # the simulated header is consistent (and runs)
    assert "readout_voxel_note" not in h.extra
    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()].decode()
    recon = xml.index("<reconSpace>")
    old = re.search(r"<fieldOfView_mm>\s*<x>([^<]+)</x>", xml[recon:])
    doubled = xml[:recon + old.start(1)] + f"{2 * fr:g}" + xml[recon + old.end(1):]
    # as a real fastMRI header: no mrirecon.geometry user parameter
    doubled = re.sub(r"<userParameterString>\s*<name>mrirecon\.geometry</name>.*?</userParameterString>",
                     "", doubled, flags=re.S)
    bad = clone_h5(mri_file, tmp_path / "fov2.h5", ismrmrd_header=doubled.encode())
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "ok"
    assert any("fov2.h5" in w and "ismrmrd_header/encoding/reconSpace/fieldOfView_mm/x: "
               f"{2 * fr:g} mm over the recon matrix x = {rx}" in w for w in entry["warnings"]), \
        entry["warnings"]


# 5. some lines shorter than the others --------------------------------------------------------

def _short_odd_lines(s, line):
    return (4, ENC_X - 4) if line % 2 else (0, ENC_X)  # odd lines lack rows 0..3


def test_lines_with_fewer_samples_are_named(tmp_path):
    """A partial echo on some lines only: the rows they lack were reconstructed as measured
    zeros without a word (the partial-echo range is one for all lines: their union)."""
    ks = read_ismrmrd(_write(tmp_path / "short.h5", span=_short_odd_lines))
    note = ks.header.extra["short_lines_note"]
    lines = SLICES * (ENC_Y // 2)
    assert note.startswith(f"{lines} of {SLICES * ENC_Y} k-space lines ({SLICES} slice(s); "
                           "idx.kspace_encode_step_1 1, 3, 5, 7, 9, 11; first data[1])"), note
    assert f"readout rows 0..3 of {ENC_X} were never sampled" in note
    assert "readout_range" not in ks.header.extra  # the union is the full readout
    assert not bool(ks.data[:, :, :4, 1::2].any())  # those rows are zero on the grid
    # the same partial echo on every line is a partial echo, marked unsampled: no such note
    same = read_ismrmrd(_write(tmp_path / "echo.h5", span=lambda s, line: (4, ENC_X - 4)))
    assert "short_lines_note" not in same.header.extra
    assert same.header.extra["readout_range"] == [4, ENC_X, ENC_X]


def test_lines_with_fewer_samples_are_warned_by_the_run(tmp_path):
    path = _write(tmp_path / "short.h5", span=_short_odd_lines)
    entry = run_one(mri_config(), path, tmp_path / "out")
    assert entry["status"] == "ok"
    (warning,) = [w for w in entry["warnings"] if "fewer readout samples" in w]
    assert warning.startswith("short.h5: ") and "rows 0..3 of 16" in warning


# 6. a slice index missing ---------------------------------------------------------------------

def test_a_missing_slice_index_is_refused(tmp_path):
    """idx.slice 0 and 2 without 1: the run failed on slice 1 with "the sampling mask selects no
    k-space column (undersample)", naming neither field nor index."""
    message = _refused(_write(tmp_path / "gap.h5", slices=(0, 2)))
    assert ": dataset/data[].idx.slice: no imaging acquisition has idx.slice 1 (1 of 0..2 " \
           "missing" in message
    alone = read_ismrmrd(tmp_path / "gap.h5", counters={"slice": 2})
    assert alone.data.shape[0] == 1
