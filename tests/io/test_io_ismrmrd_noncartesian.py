"""Non-Cartesian ISMRMRD: files written by the reference package and by our simulator."""

import ismrmrd
import numpy as np
import pytest
import torch

from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset
from mrirecon.functional.density import radial_density
from mrirecon.io import DataFormatError, read_ismrmrd
from mrirecon.operators import nufft_sense
from mrirecon.sampling import radial_trajectory

X = ismrmrd.xsd
N, COILS, SPOKES, SAMPLES = 16, 3, 26, 32  # Nyquist: pi/2 N = 25 spokes


def _xml():
    header = X.ismrmrdHeader(
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=N, y=N, z=1),
                                             fieldOfView_mm=X.fieldOfViewMm(x=200.0, y=200.0, z=5.0)),
            reconSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=N, y=N, z=1),
                                           fieldOfView_mm=X.fieldOfViewMm(x=200.0, y=200.0, z=5.0)),
            encodingLimits=X.encodingLimitsType(),
            trajectory=X.trajectoryType.RADIAL,
        )],
    )
    return X.ToXML(header)


def _write(path, kspace, traj_per_readout, dims, center_sample=0):
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(_xml())
        order = np.random.default_rng(0).permutation(kspace.shape[0] * kspace.shape[2])
        for i in order:  # shuffled
            s, r = divmod(int(i), kspace.shape[2])
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(kspace[s, :, r]),
                                                 trajectory=traj_per_readout[r].astype(np.float32),
                                                 read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0),
                                                 slice_dir=(0.0, 0.0, 1.0),
                                                 center_sample=center_sample)
            acq.idx.kspace_encode_step_1 = r
            acq.idx.slice = s
            ds.append_acquisition(acq)


def test_reads_reference_package_file_in_cycles_per_fov(tmp_path):
    traj = radial_trajectory(SPOKES, SAMPLES, golden=True)
    rng = np.random.default_rng(1)
    k = (rng.standard_normal((2, COILS, SPOKES, SAMPLES))
         + 1j * rng.standard_normal((2, COILS, SPOKES, SAMPLES))).astype(np.complex64)
    path = tmp_path / "radial.h5"
    _write(path, k, traj.numpy() * N, 2)  # cycles / FOV, no weights
    ks = read_ismrmrd(path)
    assert ks.data.shape == (2, COILS, SPOKES, SAMPLES) and ks.mask is None and not ks.is_cartesian
    np.testing.assert_allclose(ks.data.numpy(), k)
    np.testing.assert_allclose(ks.trajectory.numpy(), traj.numpy(), atol=1e-6)
    # weights computed for the trajectory (Pipe-Menon), on the scale of the ramp
    ramp = radial_density(traj, (N, N))
    assert float(ks.density.sum() / ramp.sum()) == pytest.approx(1.0, abs=0.1)


def test_inconsistent_trajectory_is_a_clear_error(tmp_path):
    traj = radial_trajectory(SPOKES, SAMPLES).numpy()
    k = np.ones((2, COILS, SPOKES, SAMPLES), np.complex64)
    path = tmp_path / "bad.h5"
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(_xml())
        for s in range(2):
            for r in range(SPOKES):
                t = traj[r] if s == 0 else traj[r] * 0.5
                acq = ismrmrd.Acquisition.from_array(k[s, :, r], trajectory=t.astype(np.float32))
                acq.idx.kspace_encode_step_1 = r
                acq.idx.slice = s
                ds.append_acquisition(acq)
    with pytest.raises(DataFormatError, match="different trajectory"):
        read_ismrmrd(path)


def test_simulated_radial_file_round_trip(tmp_path):
    (path,) = simulate_noncartesian_dataset(tmp_path, "radial", volumes=1, slices=2, coils=4,
                                            size=(32, 32), readouts=24, snr_db=None)
    ks = read_ismrmrd(path)
    assert ks.data.shape == (2, 4, 24, 64) and ks.trajectory.shape == (24, 64, 2)
    torch.testing.assert_close(ks.density, radial_density(ks.trajectory, (32, 32)), rtol=1e-5, atol=1e-6)
    # the reference package sees the same samples and trajectory
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        acq = ds.read_acquisition(5)
        assert acq.traj.shape == (64, 3)
        np.testing.assert_allclose(acq.data, ks.data[0, :, 5].numpy())
    # noise-free data are consistent with the operator: gridding gives an object, CG fits it
    op = nufft_sense(torch.ones(1, 32, 32, dtype=torch.complex64), ks.trajectory)
    assert ks.header.encoded_matrix[:2] == (32, 32)
    assert op.H(ks.density.float() * ks.data[0, :1]).abs().max() > 0


@pytest.mark.parametrize("kind, size", [("radial", (33, 31)), ("spiral", (32, 32))])
def test_the_header_limits_are_the_acquisitions_counters(tmp_path, kind, size):
    """``encodingLimits`` held the Cartesian columns' range (e1 0..30 for 33 radial spokes, 0..31
    for 4 spiral interleaves) and no slice limit, although the acquisitions use slices 0..1:
    tools that size their buffers from the limits got them wrong."""
    import ismrmrd.xsd

    (path,) = simulate_noncartesian_dataset(tmp_path, kind, volumes=1, slices=2, coils=2,
                                            size=size, snr_db=None)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        limits = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header()).encoding[0].encodingLimits
        idx = [ds.read_acquisition(i).idx for i in range(ds.number_of_acquisitions())]
    e1 = sorted({int(i.kspace_encode_step_1) for i in idx})
    assert (limits.kspace_encoding_step_1.minimum, limits.kspace_encoding_step_1.maximum) == (
        0, e1[-1]) and e1 == list(range(e1[-1] + 1))
    assert (limits.slice.minimum, limits.slice.maximum) == (0, 1)
    assert sorted({int(i.slice) for i in idx}) == [0, 1]


@pytest.mark.parametrize("missing", [0, 8])
def test_writer_and_reader_keep_the_echo_centre(tmp_path, missing):
    """Our writer sets center_sample to the sample nearest the k-space centre (16 of a full
    32-sample spoke; 8 when the first 8 are never sampled: a partial echo; 0 for centre-out
    spokes), the reference package reads it so, and our reader keeps it and says how much of a
    symmetric readout a partial echo lacks (the writer wrote 16 for the partial echo too)."""
    from mrirecon.data.simulate_mri import simulate_mri_volume
    from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian

    header = simulate_mri_volume(0, slices=1, coils=COILS, size=(N, N), seed=0).header
    traj = radial_trajectory(SPOKES, SAMPLES)[:, missing:]
    k = torch.ones(1, COILS, SPOKES, SAMPLES - missing, dtype=torch.complex64)
    path = write_ismrmrd_noncartesian(tmp_path / "pe.h5", k, traj, header)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        assert ds.read_acquisition(3).center_sample == SAMPLES // 2 - missing
    extra = read_ismrmrd(path).header.extra
    assert extra["center_sample"] == SAMPLES // 2 - missing
    if missing:
        assert extra["echo_samples"] == [8, 15]  # 8 before the centre, 15 after
        assert "sample 8 of 24 (8 before, 15 after" in extra["partial_echo_note"]
        assert "25%" in extra["partial_echo_note"]
    else:
        assert "echo_samples" not in extra and "partial_echo_note" not in extra
    out = write_ismrmrd_noncartesian(tmp_path / "co.h5", k[..., :16],
                                     radial_trajectory(SPOKES, 16, center_out=True), header)
    extra = read_ismrmrd(out).header.extra
    assert extra["center_sample"] == 0 and "echo_samples" not in extra


def test_center_sample_that_contradicts_the_trajectory_is_noted(tmp_path):
    """A partial-echo file whose center_sample says the middle of the readout: the trajectory
    decides where the echo is, and the header's value is reported naming the field."""
    traj = radial_trajectory(SPOKES, SAMPLES)[:, 8:]
    k = np.ones((1, COILS, SPOKES, SAMPLES - 8), np.complex64)
    path = tmp_path / "pe.h5"
    _write(path, k, traj.numpy(), 2, center_sample=(SAMPLES - 8) // 2)
    extra = read_ismrmrd(path).header.extra
    assert extra["center_sample"] == 12 and extra["echo_samples"] == [8, 15]
    assert "head.center_sample is 12" in extra["center_sample_note"]
    assert "at sample 8 of 24" in extra["center_sample_note"]


def test_the_simulator_stores_the_object_as_the_reference_read_whole_and_by_slice(tmp_path):
    """Radial and spiral files held no reference, so ``mrirecon run`` scored none of the radial
    pipelines on the simulator's own files ("no metrics.csv written (a fastMRI test set?)")."""
    import h5py

    from mrirecon.io.ismrmrd_stream import REFERENCE, open_ismrmrd

    (path,) = simulate_noncartesian_dataset(tmp_path, "radial", volumes=1, slices=3, coils=2,
                                            size=(24, 20), readouts=20, snr_db=None)
    whole = read_ismrmrd(path)
    assert whole.reference is not None and whole.reference.shape == (3, 24, 20)
    assert whole.reference.dtype == torch.float32 and float(whole.reference.min()) >= 0
    # the object the k-space was made of (the seeded volume of the Cartesian simulator)
    from mrirecon.data.simulate_mri import simulate_mri_volume

    obj = simulate_mri_volume(0, slices=3, coils=2, size=(24, 20), seed=0, snr_db=None).image
    torch.testing.assert_close(whole.reference, obj.abs().float(), rtol=0, atol=0)
    slices = open_ismrmrd(path)
    for i in range(3):
        one = slices.read(i)
        assert torch.equal(one.reference, whole.reference[i:i + 1])  # the same as the whole read
    with h5py.File(path, "a") as h5:  # a reference of the wrong slice count is named
        data = h5[REFERENCE][:2]
        del h5[REFERENCE]
        h5[REFERENCE] = data
    with pytest.raises(DataFormatError, match=r"reconstruction_rss.*3 slices of the k-space, "
                                              r"got float32 \(2, 24, 20\)"):
        read_ismrmrd(path)
