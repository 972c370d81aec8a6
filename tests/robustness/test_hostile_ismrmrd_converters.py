"""ISMRMRD files as scanner converters write them (audit s18): a reference scan written before
the imaging lines at its own bandwidth (the noise scan was scaled to the reference's dwell: image
1.41x too bright), ``include_calibration=False`` dropping lines that are calibration *and*
imaging lines (the k-space centre gone, 8.4 dB), a lost k-space centre line (read without a
word, then blamed on ESPIRiT), a Cartesian header whose acquisitions carry their grid as
``traj`` (read as non-Cartesian), and a header ``encodingLimits`` centre that moves the lines off
the grid (refused naming only the acquisition). Files are written by the reference ``ismrmrd``
package."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.io import DataFormatError, read_ismrmrd
from tests.helpers import ismrmrd_xml

ismrmrd = pytest.importorskip("ismrmrd")
X = ismrmrd.xsd

N, COILS = 32, 4
PC = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
PCAI = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
NOISE = ismrmrd.ACQ_IS_NOISE_MEASUREMENT


def _xml(**kw) -> str:
    return ismrmrd_xml(nx=N, ny=N, coils=COILS, fov_mm=256.0, **kw)


def _acq(data, line, *, flags=(), dwell=5.0, traj=None, part=0, reverse=False):
    data = np.ascontiguousarray(data[:, ::-1] if reverse else data, dtype=np.complex64)
    extra = {} if traj is None else {"trajectory": np.ascontiguousarray(traj, np.float32)}
    acq = ismrmrd.Acquisition.from_array(
        data, center_sample=data.shape[1] // 2, read_dir=(1.0, 0.0, 0.0),
        phase_dir=(0.0, 1.0, 0.0), slice_dir=(0.0, 0.0, 1.0), **extra)
    acq.sample_time_us = dwell
    acq.idx.kspace_encode_step_1 = line
    acq.idx.kspace_encode_step_2 = part
    for flag in tuple(flags) + ((ismrmrd.ACQ_IS_REVERSE,) if reverse else ()):
        acq.set_flag(flag)
    return acq


def _write(path: Path, xml: str, acqs) -> Path:
    """In the order given (converters write the noise scan, then the reference, then imaging)."""
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for acq in acqs:
            ds.append_acquisition(acq)
    return path


def _kspace(seed=0) -> np.ndarray:
    """``(coils, x, y)``: an ellipse with an insert and smooth phase, times smooth coil maps."""
    x = np.linspace(-1, 1, N)[:, None]
    y = np.linspace(-1, 1, N)[None, :]
    obj = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1) * (1.0 + 0.5 * ((x - 0.3) ** 2 + y ** 2 < 0.05))
    angles = 2 * np.pi * np.arange(COILS) / COILS
    maps = np.stack([np.exp(-((x - 1.5 * np.cos(a)) ** 2 + (y - 1.5 * np.sin(a)) ** 2) / 3
                            + 1j * (a + 0.5 * x)) for a in angles])
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj * maps, axes=(1, 2)), norm="ortho"),
                        axes=(1, 2))
    rng = np.random.default_rng(seed)
    return (k + 0.01 * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))).astype(
        np.complex64)


def _cplx(rng, *shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


# 1. the imaging dwell of the noise scaling ------------------------------------------------------

def test_noise_is_scaled_to_the_imaging_dwell_when_the_reference_scan_comes_first(tmp_path):
    """A separate reference (10 us) written before the imaging lines (5 us), as Siemens orders a
    refscan, set the "imaging" dwell: the noise scan (2.5 us) was scaled by sqrt(2.5 / 10)
    instead of sqrt(2.5 / 5), and the prewhitened image was 1.41x too bright."""
    k = _kspace()
    noise = _cplx(np.random.default_rng(1), COILS, 256)
    scan = [_acq(noise, 0, flags=[NOISE], dwell=2.5)]
    ref = [_acq(3 * k[:, :, c], c, flags=[PC], dwell=10.0) for c in range(12, 20)]
    img = [_acq(k[:, :, c], c, dwell=5.0) for c in range(0, N, 2)]
    got = {}
    for name, order in (("first", scan + ref + img), ("last", scan + img + ref)):
        ks = read_ismrmrd(_write(tmp_path / f"{name}.h5", _xml(mode="separate"), order))
        assert ks.calibration is not None  # the reference stays apart
        got[name] = ks.noise.numpy()
    np.testing.assert_array_equal(got["first"], got["last"])
    np.testing.assert_allclose(got["first"], noise * np.sqrt(2.5 / 5.0), rtol=1e-6)


def test_noise_of_a_radial_scan_is_scaled_to_its_imaging_dwell(tmp_path):
    """The non-Cartesian branch takes the imaging dwell by the same rule: a calibration-only
    readout written first at 10 us did not set it."""
    from mrirecon.sampling import radial_trajectory

    spokes, samples = 26, 32
    traj = radial_trajectory(spokes, samples).numpy() * N  # cycles/FOV
    rng = np.random.default_rng(2)
    noise = _cplx(rng, COILS, 128)
    acqs = [_acq(noise, 0, flags=[NOISE], dwell=2.5)]
    for r in range(spokes):
        acqs.append(_acq(_cplx(rng, COILS, samples), r, traj=traj[r], flags=[PC] if r == 0 else (),
                         dwell=10.0 if r == 0 else 5.0))
    ks = read_ismrmrd(_write(tmp_path / "radial.h5", _xml(trajectory="radial"), acqs))
    assert ks.trajectory is not None
    np.testing.assert_allclose(ks.noise.numpy(), noise * np.sqrt(2.5 / 5.0), rtol=1e-6)


# 2. include_calibration=False leaves calibration-only lines out, no more -------------------------

def test_leaving_calibration_out_keeps_lines_that_are_imaging_lines_too(tmp_path):
    """R = 2 plus centre lines 13, 15 flagged PARALLEL_CALIBRATION and ..._AND_IMAGING (as
    Siemens writes embedded ACS: both calibration and imaging) and 17, 19 flagged
    PARALLEL_CALIBRATION alone (calibration-only). The switch dropped all four (the mask lost
    the centre band: zero-filled 8.4 dB for 23.7) and counted four calibration lines."""
    k = _kspace()
    acqs = [_acq(k[:, :, c], c) for c in range(0, N, 2)]
    acqs += [_acq(k[:, :, c], c, flags=[PC, PCAI]) for c in (13, 15)]
    acqs += [_acq(k[:, :, c], c, flags=[PC]) for c in (17, 19)]
    path = _write(tmp_path / "embedded.h5", _xml(), acqs)
    full, without = read_ismrmrd(path), read_ismrmrd(path, include_calibration=False)
    kept = sorted([*range(0, N, 2), 13, 15])
    assert torch.nonzero(full.mask).flatten().tolist() == sorted([*kept, 17, 19])
    assert torch.nonzero(without.mask).flatten().tolist() == kept
    np.testing.assert_array_equal(without.data[..., kept].numpy(), full.data[..., kept].numpy())
    np.testing.assert_array_equal(without.data[0][..., kept].numpy(), k[..., kept])
    assert not without.data[..., [17, 19]].any()
    # the lines the switch leaves out, as the inert-setting note counts them
    assert full.header.extra["calibration_lines"] == 2
    # PCAI alone (ge_to_ismrmrd) and both flags are imaging: nothing to leave out
    acqs = [_acq(k[:, :, c], c, flags=[PCAI] if c % 2 else [PC, PCAI] if c in (12, 14) else [])
            for c in range(N)]
    path = _write(tmp_path / "both.h5", _xml(), acqs)
    assert read_ismrmrd(path, include_calibration=False).mask is None
    assert read_ismrmrd(path).header.extra["calibration_lines"] == 0


# 3. a lost k-space centre line ------------------------------------------------------------------

@pytest.mark.parametrize("centre", [16, 15])
def test_a_slice_without_its_k_space_centre_line_is_refused_naming_it(tmp_path, centre):
    """31 of 32 lines, the one at the limits' centre lost: read without a word, then "ESPIRiT
    needs a fully sampled centre band ..., got 0" (Walsh: "no signal above the ESPIRiT
    threshold"), zero-filled 9.2 dB with exit 0."""
    k = _kspace()
    last = N - 1 - (N // 2 - centre)  # around 15: lines 0..30 (column = line + 1)
    acqs = [_acq(k[:, :, c], c) for c in range(last + 1) if c != centre]
    path = _write(tmp_path / "lost.h5", _xml(step1=(0, last, centre)), acqs)
    with pytest.raises(DataFormatError) as err:
        read_ismrmrd(path)
    message = str(err.value)
    assert "data[].idx.kspace_encode_step_1: idx.slice 0: lines (kspace_encode_step_1) " \
           f"0..{centre - 1}, {centre + 1}.." in message
    assert f"the k-space centre line (kspace_encode_step_1 {centre}) was not acquired (the " \
           f"centre by the header's encodingLimits/kspace_encoding_step_1/center = {centre})" \
           in message


def test_a_separate_reference_that_holds_the_centre_line_lets_the_data_lack_it(tmp_path):
    """Imaging every 3rd line (16 is not one) beside a separate reference of lines 12..19:
    GRAPPA / SENSE fill the centre from the reference, so the file reads; without the
    reference (include_calibration=False) nothing holds the centre line: refused."""
    k = _kspace()
    acqs = [_acq(k[:, :, c], c, flags=[PC]) for c in range(12, 20)]
    acqs += [_acq(k[:, :, c], c) for c in range(0, N, 3)]
    path = _write(tmp_path / "r3.h5", _xml(mode="separate"), acqs)
    ks = read_ismrmrd(path)
    assert not ks.mask[N // 2] and ks.calibration[..., N // 2].abs().sum() > 0
    with pytest.raises(DataFormatError, match=r"kspace_encode_step_1 16\) was not acquired"):
        read_ismrmrd(path, include_calibration=False)


def test_all_zero_walsh_maps_are_not_blamed_on_espirit(caplog):
    """The warning of all-zero coil maps named ESPIRiT's threshold and advised
    calibrate.method=walsh when Walsh was in use; it names the method that ran."""
    from mrirecon.containers import Header
    from mrirecon.pipeline.slice_mri import MRISlice, check_slice

    kspace = torch.ones(2, 8, 8, dtype=torch.complex64)
    s = MRISlice(kspace, torch.ones(8, dtype=torch.bool), Header(encoded_matrix=(8, 8, 1),
                                                                 recon_matrix=(8, 8, 1)),
                 "f.h5", 0, maps=torch.zeros_like(kspace))
    said = {}
    for name, slice_ in (("walsh", s), ("espirit", replace(s, espirit=(8, (8, 8), (3, 3))))):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
            check_slice(slice_, "calibrate", False)
        (said[name],) = [r.getMessage() for r in caplog.records]
    assert "calibrate.method=walsh: the calibration centre band holds no signal" in said["walsh"]
    assert "ESPIRiT" not in said["walsh"]
    assert "calibrate.method=espirit: no signal above the ESPIRiT threshold; try " \
           "calibrate.crop=0 or calibrate.method=walsh" in said["espirit"]


# 4. a Cartesian header whose acquisitions carry traj --------------------------------------------

def _grid_traj(c, unit):
    """Line ``c``'s grid coordinates: centred cycles/FOV, or grid indices 0..N-1."""
    kx = np.arange(N, dtype=np.float64)
    if unit == "centred":
        return np.stack([kx - N // 2, np.full(N, c - N // 2)], 1)
    return np.stack([kx, np.full(N, c)], 1)


@pytest.mark.parametrize("unit", ["centred", "indices"])
@pytest.mark.parametrize("lines", ["full", "r2_acs"])
def test_a_cartesian_header_reads_its_lines_by_the_counters_whatever_their_traj(tmp_path, unit,
                                                                                lines):
    """Each line carrying its grid coordinates as traj was read as non-Cartesian: "non-Cartesian
    data have no acceleration", "slice 0 has no readout 1 ...", or refused as a trajectory of no
    known unit (grid indices 0..31). Read as Gadgetron reads it: by the counters, with a note."""
    k = _kspace()
    cols = range(N) if lines == "full" else sorted(set(range(0, N, 2)) | set(range(12, 20)))
    plain = read_ismrmrd(_write(tmp_path / "plain.h5", _xml(), [_acq(k[:, :, c], c) for c in cols]))
    acqs = [_acq(k[:, :, c], c, traj=_grid_traj(c, unit)) for c in cols]
    got = read_ismrmrd(_write(tmp_path / "traj.h5", _xml(), acqs))
    assert got.trajectory is None
    np.testing.assert_array_equal(got.data.numpy(), plain.data.numpy())
    assert (got.mask is None) == (plain.mask is None) == (lines == "full")
    if lines != "full":
        assert torch.equal(got.mask, plain.mask)
    assert "traj is ignored" in got.header.extra["cartesian_traj_note"]
    assert "cartesian_traj_note" not in plain.header.extra


def test_flat_top_epi_lines_with_their_traj_read_as_without(tmp_path):
    """EPI lines (every other one reversed, its traj running backwards) on the grid: read by the
    counters, reversed lines flipped back, as the same file without traj."""
    k = _kspace()

    def acqs(with_traj):
        out = []
        for c in range(N):
            t = _grid_traj(c, "centred")
            out.append(_acq(k[:, :, c], c, reverse=bool(c % 2),
                            traj=(t[::-1] if c % 2 else t) if with_traj else None))
        return out

    plain = read_ismrmrd(_write(tmp_path / "plain.h5", _xml(trajectory="epi"), acqs(False)))
    got = read_ismrmrd(_write(tmp_path / "traj.h5", _xml(trajectory="epi"), acqs(True)))
    np.testing.assert_array_equal(got.data.numpy(), plain.data.numpy())
    np.testing.assert_array_equal(got.data[0].numpy(), k)
    assert "cartesian_traj_note" in got.header.extra and "epi_note" in got.header.extra


@pytest.mark.parametrize("kind, why", [
    ("radial", "along the readout, whose kx steps by"),
    ("rotated", "are not affine in their line numbers"),
    ("ramp", "not evenly spaced (ramp sampling?)"),
])
def test_a_cartesian_header_with_a_traj_off_its_lines_is_refused_naming_both(tmp_path, kind, why):
    """Which is wrong, the header's 'cartesian' or the readouts' traj, is unknown: refused."""
    from mrirecon.sampling import radial_trajectory

    k = _kspace()
    spokes = radial_trajectory(N, N).numpy() * N
    ramp = np.sign(np.linspace(-1, 1, N)) * np.abs(np.linspace(-1, 1, N)) ** 1.5 * N / 2
    shuffled = np.random.default_rng(3).permutation(N) - N // 2  # lines, not where they say

    def traj(c):
        if kind == "radial":
            return spokes[c]
        return np.stack([ramp if kind == "ramp" else np.arange(N) - N // 2.0,
                         np.full(N, c - N // 2 if kind == "ramp" else shuffled[c])], 1)

    acqs = [_acq(k[:, :, c], c, traj=traj(c)) for c in range(N)]
    with pytest.raises(DataFormatError) as err:
        read_ismrmrd(_write(tmp_path / f"{kind}.h5", _xml(), acqs))
    message = str(err.value)
    assert "ismrmrd_header/encoding/trajectory / data[" in message and "].traj: 'cartesian', " \
           "but the acquisitions carry a traj that is not a Cartesian line" in message
    assert why in message


def test_the_writer_never_writes_a_cartesian_header_over_a_trajectory(tmp_path):
    from mrirecon.containers import Header
    from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
    from mrirecon.sampling import radial_trajectory

    traj = radial_trajectory(26, 32)
    k = torch.ones(1, 2, 26, 32, dtype=torch.complex64)
    header = Header(encoded_matrix=(16, 16, 1), recon_matrix=(16, 16, 1))
    with pytest.raises(ValueError, match=r"header.extra\['trajectory'\] is 'cartesian'"):
        write_ismrmrd_noncartesian(tmp_path / "c.h5", k, traj,
                                   header.with_(extra={"trajectory": "cartesian"}))
    path = write_ismrmrd_noncartesian(tmp_path / "o.h5", k, traj, header)  # none named: other
    ks = read_ismrmrd(path)
    assert ks.header.extra["trajectory"] == "other" and ks.trajectory is not None


# 5. a header centre that moves the lines off the grid --------------------------------------------

@pytest.mark.parametrize("centre, line, shift", [(0, 16, "+16"), (31, 0, "-15"), (12, 28, "+4")])
def test_a_wrong_limits_centre_is_named_with_the_shift_it_applied(tmp_path, centre, line, shift):
    """Lines 0..31 with center 0, 31 or 12: "data[16].idx.kspace_encode_step_1: column 32
    outside the 32 encoded lines" blamed the data; the header field that moved them is named."""
    k = _kspace()
    path = _write(tmp_path / "c.h5", _xml(step1=(0, N - 1, centre)),
                  [_acq(k[:, :, c], c) for c in range(N)])
    with pytest.raises(DataFormatError) as err:
        read_ismrmrd(path)
    assert f"data[{line}].idx.kspace_encode_step_1: column " in str(err.value)
    assert f"(line {line} was moved by {shift}, to put the header's encodingLimits/" \
           f"kspace_encoding_step_1/center = {centre} at the grid centre 16: is the header's " \
           "center wrong?)" in str(err.value)


def test_a_wrong_partition_centre_is_named_with_the_shift_it_applied(tmp_path):
    k = _kspace()
    acqs = [_acq(k[:, :, c], c, part=p) for p in range(4) for c in range(N)]
    path = _write(tmp_path / "z.h5", _xml(z=4, step2=(0, 3, 0)), acqs)
    with pytest.raises(DataFormatError, match=(
            r"idx.kspace_encode_step_2: partition 4 outside the 4 encoded partitions \(line 2 "
            r"was moved by \+2, to put the header's encodingLimits/kspace_encoding_step_2/"
            r"center = 0 at the grid centre 2")):
        read_ismrmrd(path)
