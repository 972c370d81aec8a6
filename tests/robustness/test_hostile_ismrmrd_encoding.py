"""ISMRMRD encodings the Cartesian reader read as something else, each with exit 0 and no word
(audit a13): a 3-D scan undersampled along kz (aliased, 19 dB for 43), kz partial Fourier
(zero-filled without the note ky partial Fourier gets), partitions under a 2-D header (averaged
into one slice), EPI with ramp sampling or phase-correction lines (read as Cartesian lines: 11
and 23 dB), and a reference scan acquired once, in repetition 0, dropped when another repetition
was selected (11.5 dB for 34.2 with Walsh maps). Now each is refused naming the file and the
field, or read with a note (``mrirecon/io/ismrmrd_encoding.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.io import read_ismrmrd
from tests.helpers import ismrmrd_xml
from tests.robustness.test_hostile_inputs import mri_config, run_one
from tests.robustness.test_hostile_ismrmrd_geometry import _refused

ismrmrd = pytest.importorskip("ismrmrd")
X = ismrmrd.xsd

COILS, NX, NY, NZ = 6, 32, 32, 8
STEP_2 = "data[].idx.kspace_encode_step_2"


def _xml(**kw) -> str:
    """A header of ``NX`` x ``NY`` encoded = recon matrix, 160 mm FOV (:func:`ismrmrd_xml`)."""
    return ismrmrd_xml(nx=NX, ny=NY, coils=COILS, fov_mm=160.0, **kw)


def _acq(data, line, slice_=0, *, part=0, flags=(), reverse=False, **idx):
    data = np.ascontiguousarray(data[:, ::-1] if reverse else data, dtype=np.complex64)
    acq = ismrmrd.Acquisition.from_array(
        data, center_sample=NX // 2, read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0),
        slice_dir=(0.0, 0.0, 1.0), position=(0.0, 0.0, 5.0 * slice_))
    acq.idx.kspace_encode_step_1 = line
    acq.idx.kspace_encode_step_2 = part
    acq.idx.slice = slice_
    for key, value in idx.items():
        setattr(acq.idx, key, value)
    for flag in flags + ((ismrmrd.ACQ_IS_REVERSE,) if reverse else ()):
        acq.set_flag(flag)
    return acq


def _write(path: Path, xml: str, acqs) -> Path:
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for i in np.random.default_rng(0).permutation(len(acqs)):  # shuffled, as scanners do not
            ds.append_acquisition(acqs[i])
    return path


def _centred(x, axes, inverse=False):
    f = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(f(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _coil_images(depth: int) -> np.ndarray:
    """``(depth, coils, NX, NY)``: an ellipsoid with an insert, times smooth coil maps."""
    x = np.linspace(-1, 1, NX)[:, None]
    y = np.linspace(-1, 1, NY)[None, :]
    z = np.linspace(-1, 1, depth)[:, None, None] if depth > 1 else np.zeros((1, 1, 1))
    obj = ((x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 1.1) ** 2 < 1) * (
        1.0 + ((x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.06) + 0.5 * (z > 0.3))
    angles = 2 * np.pi * np.arange(COILS) / COILS
    maps = np.stack([np.exp(-((x - 0.9 * np.cos(a)) ** 2 + (y - 0.9 * np.sin(a)) ** 2) / 0.8)
                     * np.exp(1j * a) for a in angles])
    return (obj[:, None] * maps[None]).astype(np.complex64)


# F1 / F4: a 3-D slab that lacks partitions ------------------------------------------------------

def _kspace_3d() -> np.ndarray:
    return _centred(_coil_images(NZ), (0, 2, 3))  # (kz, coils, kx, ky)


def _slab(path: Path, parts, step2, offset: int = 0, z: int = NZ) -> Path:
    """Partitions ``parts`` (grid numbers) of a 3-D scan, stored as ``kspace_encode_step_2 =
    part - offset`` (siemens_to_ismrmrd counts partial-Fourier partitions from the first one)."""
    k = _kspace_3d()
    acqs = [_acq(k[p, :, :, line], line, part=p - offset) for p in parts for line in range(NY)]
    return _write(path, _xml(z=z, step2=step2), acqs)


def test_a_fully_sampled_slab_reads_without_a_note(tmp_path):
    ks = read_ismrmrd(_slab(tmp_path / "full.h5", range(NZ), (0, NZ - 1, NZ // 2)))
    assert ks.mask is None and "kz_partial_fourier_note" not in ks.header.extra
    np.testing.assert_allclose(ks.data.numpy(), _centred(_kspace_3d(), (0,), inverse=True),
                               atol=1e-4)


def test_partitions_undersampled_along_kz_are_refused(tmp_path):
    """Every 2nd partition (3-D GRAPPA 1x2): was mask None (fully sampled) and the zero-filled
    partitions aliased along z (19 dB for 43), exit 0."""
    path = _slab(tmp_path / "rz2.h5", range(0, NZ, 2), (0, NZ - 1, NZ // 2))
    message = _refused(path)
    assert f"{path}: {STEP_2}: idx.slice 0: partitions (kspace_encode_step_2) 0, 2, 4, 6 of 8: " \
           "3 partitions between them (1, 3, 5) hold no line: partition undersampling (3-D " \
           "acceleration along kz) is not supported" in message
    entry = run_one(mri_config(), path, tmp_path / "out")  # the run names it, exit 1
    assert entry["status"] == "failed"
    assert "rz2.h5" in entry["error"] and "idx.kspace_encode_step_2" in entry["error"]
    assert "partition undersampling" in entry["error"]


def test_partitions_the_encoding_limits_say_were_acquired_are_refused_when_missing(tmp_path):
    """The limits say 0..7 but partitions 0 and 1 hold no line (a truncated file): not partial
    Fourier, whose limits name the acquired partitions."""
    message = _refused(_slab(tmp_path / "cut.h5", range(2, NZ), (0, NZ - 1, NZ // 2)))
    assert f"{STEP_2}: idx.slice 0: partitions (kspace_encode_step_2) 2..7 of 8: the header's " \
           "ismrmrd_header/encoding/encodingLimits/kspace_encoding_step_2 minimum..maximum = " \
           "0..7 says 0, 1 were acquired too, but they hold no line" in message


@pytest.mark.parametrize("step2, offset, steps", [((2, NZ - 1, NZ // 2), 0, "2..7"),
                                                  ((0, 5, 2), 2, "0..5")],
                         ids=["limits-2..7", "siemens-0..5"])
def test_kz_partial_fourier_is_read_zero_filled_with_a_note(tmp_path, step2, offset, steps):
    """6 of 8 partitions, missing at one edge as the encoding limits and their centre say (also
    numbered from the first acquired one, as siemens_to_ismrmrd writes them): zero-filled as
    before, exactly, but no longer without a word (ky partial Fourier had its note)."""
    path = _slab(tmp_path / "pfz.h5", range(2, NZ), step2, offset)
    ks = read_ismrmrd(path)
    k = _kspace_3d()
    k[:2] = 0
    np.testing.assert_allclose(ks.data.numpy(), _centred(k, (0,), inverse=True), atol=1e-4)
    assert ks.header.extra["kz_partial_fourier_note"] == (
        f"kz partial Fourier is zero-filled: 6 of 8 partitions acquired (kspace_encode_step_2 "
        f"{steps}, missing at one edge): the missing partitions are zero-filled (no "
        "partial-Fourier reconstruction along kz), so the slices are blurred along z")
    if offset:  # the run warns
        entry = run_one(mri_config(), path, tmp_path / "out")
        assert entry["status"] == "ok"
        assert any(w.startswith("pfz.h5: ") and "kz partial Fourier is zero-filled: 6 of 8 "
                   "partitions acquired" in w for w in entry["warnings"]), entry["warnings"]


def test_a_slab_zero_padded_at_both_edges_is_noted_as_interpolated(tmp_path):
    """All 8 partitions the limits name, on an encoded z of 10 (slice interpolation)."""
    ks = read_ismrmrd(_slab(tmp_path / "pad.h5", range(NZ), (0, NZ - 1, NZ // 2), z=NZ + 2))
    assert ks.data.shape[0] == NZ + 2
    assert ks.header.extra["kz_partial_fourier_note"].startswith(
        "kz is zero-filled beyond the acquired partitions: 8 of 10 partitions acquired "
        "(kspace_encode_step_2 0..7, missing at both edges): the slices are interpolated")


def test_a_slab_without_its_centre_partition_is_refused(tmp_path):
    message = _refused(_slab(tmp_path / "edge.h5", range(0, 3), None))
    assert f"{STEP_2}: idx.slice 0: partitions (kspace_encode_step_2) 0..2 of 8: the k-space " \
           "centre partition (kspace_encode_step_2 4) holds no line" in message


# F5: partitions under a 2-D header -------------------------------------------------------------

def test_partitions_under_a_2d_header_are_refused(tmp_path):
    """kspace_encode_step_2 0..3 under encodedSpace z = 1: the partitions were averaged into one
    slice, with a note about disagreeing averages."""
    k = _kspace_3d()
    acqs = [_acq(k[p, :, :, line], line, part=p) for p in range(4) for line in range(NY)]
    path = _write(tmp_path / "z1.h5", _xml(z=1), acqs)
    message = _refused(path)
    found = re.search(r": data\[(\d+)\]\.idx\.kspace_encode_step_2: (\d) \(the imaging "
                      r"acquisitions hold partitions 0\.\.3\), but the header's encoding/"
                      r"encodedSpace/matrixSize/z = 1 \(a 2-D encoding\)", message)
    assert found, message
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:  # the one named
        named = ds.read_acquisition(int(found.group(1)))
    assert named.idx.kspace_encode_step_2 == int(found.group(2)) > 0
    # one partition (all step_2 = 0) under the same header reads as before
    one = _write(tmp_path / "z1_ok.h5", _xml(z=1), acqs[:NY])
    assert read_ismrmrd(one).data.shape == (1, COILS, NX, NY)


# F2: EPI ---------------------------------------------------------------------------------------

def _epi(path: Path, *, trajectory="epi", ramps=None, phasecorr=0) -> tuple[Path, np.ndarray]:
    """2 slices of EPI as siemens_to_ismrmrd writes it: odd lines ACQ_IS_REVERSE (stored in
    acquisition order), ``phasecorr`` ACQ_IS_PHASECORR_DATA lines per slice at the centre."""
    k = _centred(np.concatenate([_coil_images(1)] * 2) * np.array([1.0, 0.7])[:, None, None, None],
                 (2, 3))
    acqs = [_acq(k[s, :, :, line], line, s, reverse=bool(line % 2))
            for s in range(2) for line in range(NY)]
    acqs += [_acq(k[s, :, :, NY // 2], NY // 2, s, flags=(ismrmrd.ACQ_IS_PHASECORR_DATA,),
                  reverse=bool(j % 2), segment=j % 2) for s in range(2) for j in range(phasecorr)]
    return _write(path, _xml(slices=2, trajectory=trajectory, ramps=ramps), acqs), k


@pytest.mark.parametrize("ramps, phasecorr, named", [
    ((100, 100), 0, "'epi' with ramp sampling (trajectoryDescription rampUpTime 100, "
                    "rampDownTime 100): "),
    ((0, 0), 3, "'epi' with 6 phase-correction acquisitions (ACQ_IS_PHASECORR_DATA): "),
    ((100, 0), 3, "'epi' with ramp sampling (trajectoryDescription rampUpTime 100) and 6 "
                  "phase-correction acquisitions (ACQ_IS_PHASECORR_DATA): "),
    (None, 3, "'epi' with 6 phase-correction acquisitions"),
], ids=["ramps", "phasecorr", "both", "no-description"])
def test_epi_that_needs_regridding_or_ghost_correction_is_refused(tmp_path, ramps, phasecorr,
                                                                   named):
    """Was read as plain Cartesian lines: 11 dB with ramp sampling, 23 dB with Nyquist ghosts."""
    path, _ = _epi(tmp_path / "epi.h5", ramps=ramps, phasecorr=phasecorr)
    message = _refused(path)
    assert f"{path}: ismrmrd_header/encoding/trajectory: {named}" in message, message
    assert "it does no ramp-sampling regridding and no Nyquist-ghost (phase-correction) " \
           "correction" in message
    assert "Gadgetron's EPI reconstruction" in message and "'cartesian'" in message


def test_flat_top_epi_without_phase_correction_lines_is_read_with_a_note(tmp_path):
    for name, ramps in (("flat.h5", (0, 0)), ("plain.h5", None)):
        path, k = _epi(tmp_path / name, ramps=ramps)
        ks = read_ismrmrd(path)
        np.testing.assert_allclose(ks.data.numpy(), k, atol=1e-6)  # reversed lines flipped back
        assert ks.header.extra["epi_note"].startswith(
            "header encoding/trajectory 'epi' read as Cartesian lines (no ramp sampling described,"
            " no phase-correction lines)")


def test_phase_correction_lines_of_a_cartesian_file_are_noted_as_ignored(tmp_path):
    path, k = _epi(tmp_path / "cart.h5", trajectory="cartesian", phasecorr=3)
    ks = read_ismrmrd(path)
    np.testing.assert_allclose(ks.data.numpy(), k, atol=1e-6)  # none averaged into the centre
    assert ks.header.extra["phasecorr_note"].startswith(
        "6 phase-correction acquisitions (ACQ_IS_PHASECORR_DATA) were ignored: no Nyquist-ghost "
        "correction is done")
    assert "epi_note" not in ks.header.extra


# F3: a reference scan acquired once, under another counter value -------------------------------

REF_LINES = range(NY // 2 - 6, NY // 2 + 6)


def _series(path: Path, *, refs=(0,), reps=2, mode="separate", ref_slices=(0, 1),
            seed=3) -> Path:
    """2 slices; every 2nd line in each of ``reps`` repetitions (own noise); calibration-only
    reference lines ``REF_LINES`` (x ``1 + repetition``) under each repetition of ``refs`` only,
    in the slices ``ref_slices``."""
    rng = np.random.default_rng(seed)
    k = _centred(_coil_images(1)[0], (1, 2))
    acqs = []
    for s in range(2):
        for rep in range(reps):
            for line in range(0, NY, 2):
                noise = 0.01 * (rng.normal(size=(COILS, NX)) + 1j * rng.normal(size=(COILS, NX)))
                acqs.append(_acq(k[:, :, line] + noise, line, s, repetition=rep))
        for rep in refs if s in ref_slices else ():
            acqs += [_acq((1 + rep) * k[:, :, line], line, s, repetition=rep,
                          flags=(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)) for line in REF_LINES]
    return _write(path, _xml(slices=2, mode=mode), acqs)


@pytest.mark.parametrize("mode", ["separate", None])
def test_a_reference_of_repetition_0_serves_the_repetition_selected(tmp_path, mode):
    """Was: calibration None, no note (the reference lines were selected away with their
    repetition). A reference that agrees with the imaging lines (no calibrationMode) stays apart
    too: another repetition's lines never fill this one's gaps."""
    path = _series(tmp_path / "rep.h5", mode=mode)
    ref0 = read_ismrmrd(path, counters={"repetition": 0})
    ks = read_ismrmrd(path, counters={"repetition": 1})
    assert ks.calibration is not None
    imaging = [c for c in range(NY) if c % 2 == 0]
    gaps = [c for c in range(NY) if c % 2]
    assert not ks.data.numpy()[..., gaps].any()  # no reference line in the image
    assert ks.mask.tolist() == [c % 2 == 0 for c in range(NY)]
    k = _centred(_coil_images(1)[0], (1, 2))
    np.testing.assert_allclose(ks.calibration.numpy()[..., list(REF_LINES)],
                               np.broadcast_to(k[..., list(REF_LINES)], (2, COILS, NX, 12)),
                               atol=1e-5)
    assert not ks.calibration.numpy()[..., [c for c in range(NY) if c not in REF_LINES]].any()
    assert ks.header.extra["reference_counter_note"].startswith(
        "the reference scan was taken from repetition 0: no calibration-only line "
        "(ACQ_IS_PARALLEL_CALIBRATION) was acquired at repetition=1, so the 24 calibration-only "
        "lines of repetition 0")
    assert "separate reference scan (taken from repetition 0)" in \
        ks.header.extra["calibration_note"]
    np.testing.assert_allclose(ks.data.numpy()[..., imaging], ref0.data.numpy()[..., imaging],
                               atol=0.1)  # the other repetition's imaging lines (own noise)
    assert "reference_counter_note" not in ref0.header.extra


def test_a_repetition_with_its_own_reference_keeps_it_and_several_others_are_refused(tmp_path):
    path = _series(tmp_path / "refs.h5", refs=(0, 1), reps=3)
    own = read_ismrmrd(path, counters={"repetition": 1})  # its own reference (2x): no borrowing
    k = _centred(_coil_images(1)[0], (1, 2))
    np.testing.assert_allclose(own.calibration.numpy()[0][..., list(REF_LINES)],
                               2 * k[..., list(REF_LINES)], atol=1e-5)
    assert "reference_counter_note" not in own.header.extra
    message = _refused(path, counters={"repetition": 2})
    assert f"{path}: idx.repetition: no calibration-only line (ACQ_IS_PARALLEL_CALIBRATION) has " \
           "repetition=2, and those of repetition [0, 1] are 2 reference scans: which one " \
           "belongs to repetition=2 is unknown" in message
    # without the reference lines it reads
    assert read_ismrmrd(path, counters={"repetition": 2}, include_calibration=False).calibration \
        is None
    # another slice's reference is another place: never borrowed
    one = _series(tmp_path / "slice0.h5", ref_slices=(0,))
    alone = read_ismrmrd(one, counters={"slice": 1, "repetition": 0})
    assert alone.calibration is None and "reference_counter_note" not in alone.header.extra
    assert read_ismrmrd(one, counters={"slice": 0, "repetition": 1}).calibration is not None


def test_the_run_of_a_later_repetition_uses_the_first_ones_reference(tmp_path):
    """Through the pipeline with Walsh maps: repetition 1 reconstructs as well as repetition 0
    (was 11.5 dB for 34.2 on the audit's 8-coil brain, maps from an undersampled centre)."""
    path = _series(tmp_path / "rep.h5")
    truth = np.sqrt((np.abs(_coil_images(1)[0]) ** 2).sum(0))
    scores = []
    for rep in (0, 1):
        out = tmp_path / f"out{rep}"
        config = mri_config(f"load.counters.repetition={rep}", "calibrate.method=walsh",
                            "reconstruct.method=cg_sense", "reconstruct.params={}")
        entry = run_one(config, path, out)
        assert entry["status"] == "ok"
        with h5py.File(out / "reconstructions" / "rep.h5") as f:
            image = np.abs(f["reconstruction"][()]).astype(np.float64)
        scale = (image * truth).sum() / (image * image).sum()
        mse = ((scale * image - truth) ** 2).mean()
        scores.append(10 * np.log10(truth.max() ** 2 / mse))
    assert scores[0] > 25 and abs(scores[1] - scores[0]) < 1.0, scores


def test_a_radial_scan_never_averages_another_repetitions_reference_into_its_image(tmp_path):
    """The non-Cartesian reader keeps no reference apart: calibration-only readouts of
    repetition 0, borrowed for repetition 1, were averaged into repetition 1's spokes (repeats
    of a readout). They are left out there, without the Cartesian reader's note."""
    from mrirecon.sampling import radial_trajectory

    spokes, samples = 12, 2 * NX
    traj = radial_trajectory(spokes, samples).numpy().astype(np.float32)  # (spokes, samples, 2)
    rng = np.random.default_rng(4)
    data = {rep: (rng.standard_normal((spokes, COILS, samples))
                  + 1j * rng.standard_normal((spokes, COILS, samples))).astype(np.complex64)
            for rep in (0, 1)}
    acqs = []
    for rep in (0, 1):
        for r in range(spokes):
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(data[rep][r]), trajectory=traj[r], read_dir=(0.0, 1.0, 0.0),
                phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
            acq.idx.kspace_encode_step_1, acq.idx.repetition = r, rep
            acqs.append(acq)
    for r in range(4):  # a reference acquired once, in repetition 0, on spokes 0..3: x 100
        acq = ismrmrd.Acquisition.from_array(
            np.ascontiguousarray(100 * data[0][r]), trajectory=traj[r], read_dir=(0.0, 1.0, 0.0),
            phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
        acq.idx.kspace_encode_step_1, acq.idx.repetition = r, 0
        acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        acqs.append(acq)
    path = _write(tmp_path / "radial.h5", _xml(trajectory="radial"), acqs)
    ks = read_ismrmrd(path, counters={"repetition": 1})
    np.testing.assert_array_equal(ks.data[0].numpy(), data[1].transpose(1, 0, 2))
    assert "reference_counter_note" not in ks.header.extra


def test_a_reversed_line_whose_centre_does_not_fit_names_the_reversal(tmp_path):
    """A reversed line's ``center_sample`` given in acquisition (stored) order: NX - 1 - NX / 2
    where the reader takes it in k-space order, after the flip. The refusal said only that the
    samples did not fit; now it says how a reversed line's centre is read."""
    k = _centred(_coil_images(1), (2, 3))
    acqs = [_acq(k[0, :, :, line], line, reverse=bool(line % 2)) for line in range(NY)]
    for acq in acqs[1::2]:
        acq.center_sample = NX - 1 - NX // 2
    message = _refused(_write(tmp_path / "rev.h5", _xml(), acqs))
    assert f"samples centred at {NX - 1 - NX // 2} do not fit the encoded x = {NX} (an " \
           "ACQ_IS_REVERSE line: center_sample is read in k-space order, after the flip)" \
           in message, message
