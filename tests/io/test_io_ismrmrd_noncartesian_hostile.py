"""Non-Cartesian ISMRMRD reader on hostile files: trajectory units, discarded samples, repeated
readouts, slice order, 3-D data, bad weights and indices (docs/robustness.md)."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset
from mrirecon.io import DataFormatError, read_ismrmrd

N, SPOKES = 16, 26
EPS = float(np.finfo(np.float32).eps)  # the file stores float32 trajectories and samples


@pytest.fixture(scope="module")
def radial(tmp_path_factory) -> Path:
    """2 slices x 2 coils, 26 spokes x 32 samples on a 16 x 16 matrix, weights in the file."""
    out = tmp_path_factory.mktemp("radial")
    (path,) = simulate_noncartesian_dataset(out, "radial", volumes=1, slices=2, coils=2,
                                            size=(N, N), readouts=SPOKES, snr_db=None)
    return path


def _load(path):
    with h5py.File(path) as h5:
        return h5["dataset/xml"][0], h5["dataset/data"][()]


def _save(path, xml, records) -> Path:
    with h5py.File(path, "w") as h5:
        group = h5.create_group("dataset")
        group.create_dataset("xml", data=np.array([xml], dtype=h5py.string_dtype("utf-8")))
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path


def _traj(record) -> np.ndarray:
    return np.asarray(record["traj"]).reshape(-1, int(record["head"]["trajectory_dimensions"]))


def _with_traj(radial, path, edit) -> Path:
    """A copy of ``radial`` whose trajectories (samples, 3) are replaced by ``edit(t)``."""
    xml, records = _load(radial)
    for i in range(len(records)):
        records[i]["traj"] = np.asarray(edit(_traj(records[i]).copy()), np.float32).reshape(-1)
    return _save(path, xml, records)


def _scaled(factor):
    def edit(t):
        t[:, :2] *= factor
        return t
    return edit


# F1: units from the extent ---------------------------------------------------------------

@pytest.mark.parametrize("unit, factor", [("cycles/FOV", N), ("radians", 2 * np.pi),
                                          ("normalised", 1.0)])
def test_trajectory_units_are_recognised_and_converted(radial, tmp_path, unit, factor):
    ref = read_ismrmrd(radial)
    ks = read_ismrmrd(_with_traj(radial, tmp_path / "u.h5", _scaled(factor)))
    assert ks.header.extra["trajectory_unit"] == unit
    # float32 storage of the scaled coordinates: a few ulps of the extent 0.5
    np.testing.assert_allclose(ks.trajectory.numpy(), ref.trajectory.numpy(), rtol=0, atol=4 * EPS)


def test_overshoot_within_half_a_grid_cell_is_kept_normalised(radial, tmp_path):
    """0.5 (1 + 0.9 / N): moved onto the edge, never divided by the matrix (was: 1/N the size)."""
    factor = 1 + 0.9 / N
    ref = read_ismrmrd(radial).trajectory.numpy()
    ks = read_ismrmrd(_with_traj(radial, tmp_path / "o.h5", _scaled(factor)))
    assert ks.header.extra["trajectory_unit"] == "normalised"
    np.testing.assert_allclose(ks.trajectory.numpy(), np.clip(ref * factor, -0.5, 0.5),
                               rtol=0, atol=4 * EPS)
    assert float(ks.trajectory.abs().max()) > 0.5 * (1 - 4 * EPS)


@pytest.mark.parametrize("factor", [0.4, 1 + 2 / N, 1.5, 2 * np.pi * 1.2])
def test_trajectory_extent_fitting_no_unit_is_refused(radial, tmp_path, factor):
    """Below half of every edge, or past an edge by more than half a grid cell (and short of the
    next candidate's half edge)."""
    path = _with_traj(radial, tmp_path / "x.h5", _scaled(factor))
    with pytest.raises(DataFormatError, match=r"data\[\]\.traj: the trajectory reaches") as err:
        read_ismrmrd(path)
    import re

    found = float(re.search(r"\|ky\| = ([0-9.e+-]+)", str(err.value)).group(1))
    assert found == pytest.approx(0.5 * factor, rel=1e-3)  # the message names the extent


def test_half_extent_is_accepted_with_a_note(radial, tmp_path):
    ks = read_ismrmrd(_with_traj(radial, tmp_path / "h.h5", _scaled(0.6)))
    assert "reaches 0.60 of the edge" in ks.header.extra["trajectory_note"]
    from mrirecon.pipeline.slice_mri import make_slice

    assert "reaches 0.60" in make_slice(ks, 0, "h.h5", None).notes["trajectory_extent"]
    assert "trajectory_note" not in read_ismrmrd(radial).header.extra


# F2: discard_pre / discard_post ----------------------------------------------------------

def test_discarded_samples_are_dropped_with_their_trajectory(radial, tmp_path):
    pre, post = 5, 3
    xml, records = _load(radial)
    for i in range(len(records)):
        head = records[i]["head"]
        channels, n = int(head["active_channels"]), int(head["number_of_samples"])
        x = np.asarray(records[i]["data"]).view(np.complex64).reshape(channels, n)
        junk = np.full((channels, 1), 1e3, np.complex64)  # an ADC ramp far above the signal
        x = np.concatenate([np.repeat(junk, pre, 1), x, np.repeat(junk, post, 1)], 1)
        t = _traj(records[i])
        t = np.concatenate([np.repeat(t[:1] * 3, pre, 0), t, np.repeat(t[-1:] * 3, post, 0)])
        head["number_of_samples"] = n + pre + post
        head["discard_pre"], head["discard_post"] = pre, post
        records[i]["data"] = np.ascontiguousarray(x).view(np.float32).reshape(-1)
        records[i]["traj"] = t.astype(np.float32).reshape(-1)
    ks = read_ismrmrd(_save(tmp_path / "d.h5", xml, records))
    ref = read_ismrmrd(radial)
    np.testing.assert_array_equal(ks.data.numpy(), ref.data.numpy())
    np.testing.assert_array_equal(ks.trajectory.numpy(), ref.trajectory.numpy())
    np.testing.assert_array_equal(ks.density.numpy(), ref.density.numpy())


# F3: repeated readouts, partitions --------------------------------------------------------

def _repeated(radial, path, second):
    """Every acquisition twice; the copy gets idx.average 1 and data ``second(x)``."""
    xml, records = _load(radial)
    copy = records.copy()
    for i in range(len(copy)):
        x = np.asarray(copy[i]["data"]).view(np.complex64)
        copy[i]["data"] = np.asarray(second(x), np.complex64).view(np.float32)
        copy[i]["head"]["idx"]["average"] = 1
    return _save(path, xml, np.concatenate([records, copy]))


def test_averages_are_averaged(radial, tmp_path):
    rng = np.random.default_rng(0)
    noise = {}

    def second(x):
        noise[len(noise)] = n = (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))
        return x + n

    ks = read_ismrmrd(_repeated(radial, tmp_path / "nex2.h5", second))
    ref = read_ismrmrd(radial)
    # (x + (x + n)) / 2 = x + n / 2: the mean, not the last copy (x + n)
    xml, records = _load(radial)
    half = np.zeros_like(ref.data.numpy())
    for i, rec in enumerate(records):
        s, r = int(rec["head"]["idx"]["slice"]), int(rec["head"]["idx"]["kspace_encode_step_1"])
        half[s, :, r] = noise[i].reshape(half.shape[1], -1) / 2
    scale = float(np.abs(ref.data.numpy()).max() + 4)
    np.testing.assert_allclose(ks.data.numpy(), ref.data.numpy() + half, rtol=0, atol=8 * EPS * scale)


def test_exact_duplicate_readouts_read_as_one(radial, tmp_path):
    """As repeated Cartesian lines: averaged, so an exact copy changes nothing."""
    xml, records = _load(radial)
    path = _save(tmp_path / "dup.h5", xml, np.concatenate([records, records[:5]]))
    ref = read_ismrmrd(radial).data.numpy()
    np.testing.assert_allclose(read_ismrmrd(path).data.numpy(), ref, rtol=0,
                               atol=4 * EPS * float(np.abs(ref).max()))


def test_stack_of_stars_partitions_are_refused(radial, tmp_path):
    xml, records = _load(radial)
    copy = records.copy()
    copy["head"]["idx"]["kspace_encode_step_2"] = 1
    path = _save(tmp_path / "sos.h5", xml, np.concatenate([records, copy]))
    with pytest.raises(DataFormatError, match=r"idx\.kspace_encode_step_2: partitions \[0, 1\]"):
        read_ismrmrd(path)


def test_3d_header_is_refused(radial, tmp_path):
    xml, records = _load(radial)
    xml3 = xml.decode().replace("<z>1</z>", f"<z>{N}</z>", 1)
    assert xml3 != xml.decode()
    with pytest.raises(DataFormatError, match=rf"matrixSize/z: {N}: 3-D non-Cartesian"):
        read_ismrmrd(_save(tmp_path / "z.h5", xml3.encode(), records))


# F4: slice order ---------------------------------------------------------------------------

def test_slices_are_sorted_by_position(radial, tmp_path):
    xml, records = _load(radial)
    records["head"]["idx"]["slice"] = 1 - records["head"]["idx"]["slice"]  # descending indices
    ks = read_ismrmrd(_save(tmp_path / "rev.h5", xml, records))
    ref = read_ismrmrd(radial)
    np.testing.assert_array_equal(ks.data.numpy(), ref.data.numpy())
    assert ks.header.geometry == ref.header.geometry


def test_unevenly_spaced_slices_are_refused(tmp_path):
    (path,) = simulate_noncartesian_dataset(tmp_path, "radial", volumes=1, slices=3, coils=1,
                                            size=(N, N), readouts=SPOKES, snr_db=None)
    xml, records = _load(path)
    normal = np.cross(records["head"]["phase_dir"][0], records["head"]["read_dir"][0])
    third = records["head"]["idx"]["slice"] == 2
    records["head"]["position"][third] += 7 * normal.astype(np.float32)
    with pytest.raises(DataFormatError, match="not evenly spaced"):
        read_ismrmrd(_save(tmp_path / "uneven.h5", xml, records))


# F6, F8: weights, trajectory values, indices -----------------------------------------------

def test_all_zero_weights_are_refused(radial, tmp_path):
    def zero(t):
        t[:, 2] = 0
        return t
    with pytest.raises(DataFormatError, match=r"data\[\]\.traj: the density weights .* all zero"):
        read_ismrmrd(_with_traj(radial, tmp_path / "w0.h5", zero))


@pytest.mark.parametrize("value, problem", [(np.nan, "1 NaN or Inf values"),
                                            (-1.0, "negative density weights")])
def test_bad_value_in_one_slice_is_named(radial, tmp_path, value, problem):
    """Was "readout r has a different trajectory in slice 1"."""
    xml, records = _load(radial)
    a = int(np.flatnonzero(records["head"]["idx"]["slice"] == 1)[3])
    t = _traj(records[a]).copy()
    t[4, 2] = value
    records[a]["traj"] = t.reshape(-1)
    with pytest.raises(DataFormatError, match=rf"data\[{a}\]\.traj: {problem}"):
        read_ismrmrd(_save(tmp_path / "v.h5", xml, records))


def test_huge_indices_are_refused_before_allocating(radial, tmp_path):
    xml, records = _load(radial)
    one = records[:1].copy()
    one["head"]["idx"]["slice"] = one["head"]["idx"]["kspace_encode_step_1"] = 65535
    with pytest.raises(DataFormatError, match=r"idx\.slice: 65535 exceeds the header's "
                                              r"encodingLimits/slice/maximum = 1"):
        read_ismrmrd(_save(tmp_path / "huge.h5", xml, one))  # the writer records the limits
    text = xml.decode() if isinstance(xml, bytes) else xml
    bare = re.sub(r"<slice>.*?</slice>", "", text, flags=re.S)  # as other writers leave it
    assert bare != text
    with pytest.raises(DataFormatError, match=r"idx\.slice / kspace_encode_step_1: slice 0 has "
                                              r"no readout 0 .*need 4294967296 readouts"):
        read_ismrmrd(_save(tmp_path / "huge2.h5", bare, one))


@pytest.mark.parametrize("factor", [3.3e-12, 40.7, 1000.0])
def test_density_weights_of_another_scale_are_brought_to_the_library_scale(radial, tmp_path, factor):
    """ISMRMRD fixes no scale for density weights, but the gridded image's intensity (the data
    scale classical methods divide by, hence what lam means) follows it: weights x 1000 gave TV
    16.1 dB instead of 32.1. The shape is the file's, the scale the library's (within 2x it
    is kept: the analytic ramp the simulator writes)."""
    from mrirecon.functional.density import gridding_gain, pipe_menon_density

    def edit(t):
        t[:, 2] *= factor
        return t

    base = read_ismrmrd(radial)
    got = read_ismrmrd(_with_traj(radial, tmp_path / "w.h5", edit))
    reference = pipe_menon_density(base.trajectory, (N, N))
    ref_sum = float(reference.sum())
    assert 0.5 <= ref_sum / float(base.density.sum()) <= 2 and "density_scale_note" not in base.header.extra
    # scaled to grid an image at the intensity Pipe-Menon's weights give it, not to their sum
    # (which rescaled the correct ramp of undersampled spokes: tests/robustness/
    # test_hostile_noncartesian.py)
    want = gridding_gain(reference, base.trajectory, (N, N))
    assert abs(gridding_gain(got.density, got.trajectory, (N, N)) / want - 1) < 1e-6
    ratio = got.density / base.density
    assert float(ratio.max() / ratio.min() - 1) < 16 * EPS  # the file's shape
    assert "multiplied by" in got.header.extra["density_scale_note"]


def test_repeats_that_disagree_are_noted(radial, tmp_path):
    """As for Cartesian lines (``repeat_note_of``): an exact copy reads without a note, an empty
    second average is named (50 % of the energy)."""
    assert "repeats_note" not in read_ismrmrd(_repeated(radial, tmp_path / "same.h5",
                                                        lambda x: x)).header.extra
    note = read_ismrmrd(_repeated(radial, tmp_path / "empty.h5", np.zeros_like)).header.extra
    assert "differ by 50% of their energy" in note["repeats_note"]


def test_non_finite_data_are_not_written(tmp_path):
    """The writer refuses what the reader would refuse (NaN / Inf k-space or trajectory; it
    wrote them, exit 0), naming the file and the field, and leaves no file behind."""
    import torch

    from mrirecon.containers import Header
    from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian

    angles = torch.arange(4) * torch.pi / 4
    r = torch.linspace(-0.5, 0.5, 8)
    traj = torch.stack([r[None] * torch.cos(angles)[:, None], r[None] * torch.sin(angles)[:, None]], -1)
    header = Header(encoded_matrix=(8, 8, 1), recon_matrix=(8, 8, 1), extra={"trajectory": "radial"})
    ks = torch.ones(1, 2, 4, 8, dtype=torch.complex64)
    ks[0, 1, 2, 3] = complex("nan")
    path = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match=rf"{path}: kspace has 1 NaN or Inf"):
        write_ismrmrd_noncartesian(path, ks, traj, header)
    bad_traj = traj.clone()
    bad_traj[1, 1, 0] = float("inf")
    with pytest.raises(ValueError, match=rf"{path}: trajectory has 1 NaN or Inf"):
        write_ismrmrd_noncartesian(path, torch.ones_like(ks), bad_traj, header)
    density = torch.ones(4, 8)
    density[3, 7] = float("nan")
    with pytest.raises(ValueError, match=rf"{path}: density has 1 NaN or Inf"):
        write_ismrmrd_noncartesian(path, torch.ones_like(ks), traj, header, density=density)
    assert list(tmp_path.iterdir()) == []
    write_ismrmrd_noncartesian(path, torch.ones_like(ks), traj, header)  # the same data, finite
    assert tuple(read_ismrmrd(path).data.shape[-2:]) == (4, 8)


def test_radial_readouts_without_their_trajectory_are_refused(radial, tmp_path):
    """A radial file whose acquisitions lost their traj (trajectory_dimensions 0; some converters
    write none) was read as Cartesian: each spoke taken as a phase-encoding line. With as many
    samples as the header's encoded x and no more spokes than its y, that gave a striped
    image of nothing, exit 0; otherwise a message about sample counts that did not say why."""
    xml, records = _load(radial)
    records = records[records["head"]["idx"]["kspace_encode_step_1"] < N]  # spokes fit the y lines
    for i in range(len(records)):
        records[i]["head"]["trajectory_dimensions"] = 0
        records[i]["traj"] = np.zeros(0, np.float32)
    samples = int(records[0]["head"]["number_of_samples"])
    fits = xml.replace(b"<x>%d</x>" % N, b"<x>%d</x>" % samples, 1)  # encodedSpace comes first
    assert fits != xml
    for name, text in (("fits.h5", fits), ("x.h5", xml)):
        path = _save(tmp_path / name, text, records)
        with pytest.raises(DataFormatError) as err:
            read_ismrmrd(path)
        assert str(err.value) == (
            f"{path}: data[0].head.trajectory_dimensions: 0: the acquisitions carry no k-space "
            "coordinates (traj), but the header's encoding/trajectory is 'radial': radial "
            "readouts cannot be placed without them; write the trajectory into each acquisition "
            "(traj, trajectory_dimensions 2 or 3)")


def test_a_noise_scan_with_another_coil_count_is_refused_naming_the_file(radial, tmp_path):
    """A noise scan of 3 channels beside 2-channel radial readouts was read, and prewhitening
    failed with "prewhiten: covariance is for 3 coils, data has 2 coils", naming no file (the
    Cartesian branch checked it; the non-Cartesian one did not)."""
    xml, records = _load(radial)
    rng = np.random.default_rng(0)

    def with_noise(channels):
        scan = records[:1].copy()
        head = scan[0]["head"]
        head["flags"] = np.uint64(1) << np.uint64(18)  # ACQ_IS_NOISE_MEASUREMENT (flag 19)
        head["active_channels"] = head["available_channels"] = channels
        head["trajectory_dimensions"] = 0
        n = int(head["number_of_samples"])
        x = (rng.standard_normal((channels, n)) + 1j * rng.standard_normal((channels, n)))
        scan[0] = (head, np.zeros(0, np.float32), x.astype(np.complex64).view(np.float32).reshape(-1))
        return np.concatenate([scan, records])

    ks = read_ismrmrd(_save(tmp_path / "ok.h5", xml, with_noise(2)))
    assert tuple(ks.noise.shape) == (2, int(records[0]["head"]["number_of_samples"]))
    path = _save(tmp_path / "bad.h5", xml, with_noise(3))
    with pytest.raises(DataFormatError) as err:
        read_ismrmrd(path)
    assert str(err.value) == f"{path}: dataset/data: noise scans have [3] channels, imaging has 2"


def test_a_trajectory_narrow_along_ky_is_still_normalised(radial, tmp_path):
    """A unit fits when the extent reaches half its edge on SOME axis (module docstring): spokes
    confined to a narrow band of angles (ky reaching 0.4 of the edge, kx the full 0.5) are
    normalised coordinates, read unchanged, not refused as of no unit."""
    def narrow(t):
        t[:, 1] *= 0.4
        return t

    ks = read_ismrmrd(_with_traj(radial, tmp_path / "narrow.h5", narrow))
    assert ks.header.extra["trajectory_unit"] == "normalised"
    xml, records = _load(tmp_path / "narrow.h5")
    first = np.asarray(records[0]["traj"]).reshape(-1, 3)[:, :2]
    np.testing.assert_allclose(ks.trajectory[0].numpy(), np.clip(first, -0.5, 0.5 - EPS / 4),
                               rtol=0, atol=4 * EPS)


def test_center_sample_follows_dropped_leading_zero_samples(radial, tmp_path):
    """Samples zero in every readout at the start are dropped like discard_pre: the stored
    center_sample counts them, so the kept readout's centre is ``center_sample - dropped``
    (and agrees with the trajectory: no center_sample_note)."""
    drop = 3
    xml, records = _load(radial)
    stored_centre = int(records[0]["head"]["center_sample"])
    for i in range(len(records)):
        channels = int(records[i]["head"]["active_channels"])
        x = np.asarray(records[i]["data"], np.float32).view(np.complex64).reshape(channels, -1).copy()
        x[:, :drop] = 0
        records[i]["data"] = x.view(np.float32).reshape(-1)
    ks = read_ismrmrd(_save(tmp_path / "lead.h5", xml, records))
    assert "zero_samples_note" in ks.header.extra
    assert ks.header.extra["center_sample"] == stored_centre - drop
    assert "center_sample_note" not in ks.header.extra
