"""Hostile non-Cartesian inputs and API calls (docs/robustness.md): lost readouts stored as zeros
(reader, pipeline slice, ``recon.run``), ``lam`` as a numpy scalar or tensor, a trajectory edited
after ``nufft_sense`` was built (also under ``torch.inference_mode``), ``NufftSense.with_maps``
with bad maps, trajectories in other units or with NaN through the density and calibration
functions, a spiral through the radial ramp, and a batch of masks through ``sense(...).gram``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from mrirecon import recon
from mrirecon.calib import noncartesian_maps
from mrirecon.containers import KSpace
from mrirecon.core.checks import param_problem
from mrirecon.functional.density import pipe_menon_density, radial_density
from mrirecon.functional.nufft import DEFAULT_EPS, ndft, nufft
from mrirecon.io import read_ismrmrd
from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
from mrirecon.operators import ParallelBeam, nufft_sense, sense
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.nufft import empty_readouts
from mrirecon.pipeline.slice_mri import make_slice
from mrirecon.sampling import golden_angle_radial, spiral_trajectory
from tests.helpers import shepp_sense_problem
from tests.models.problems import coil_maps, phantom

N, SPOKES = 16, 24
LOST = torch.arange(SPOKES) % 6 == 0  # readouts 0, 6, 12, 18
# the Toeplitz gram equals A^H A to the NUFFT's tolerance (1e-12 in double precision): a
# thousand times that is rounding, a gram for another trajectory is off by tens of percent
GRAM_TOL = 1e3 * DEFAULT_EPS[torch.complex128]


def _problem(coils: int = 3):
    maps = coil_maps(coils, N, N).to(torch.complex128)
    x = phantom(1, N, N)[0].to(torch.complex128)
    traj = golden_angle_radial(SPOKES, 2 * N).to(torch.float64)
    return maps, x, traj


# 1. lost readouts stored as zeros ------------------------------------------------------------

def _kspace(y, traj, extra):
    from mrirecon.containers import Header

    header = Header(encoded_matrix=(N, N, 1), recon_matrix=(N, N, 1), extra=extra)
    return KSpace(data=y[None].to(torch.complex64), header=header, mask=None, trajectory=traj,
                  density=pipe_menon_density(traj, (N, N)))


def test_pipeline_slice_drops_lost_readouts_with_a_warning():
    maps, x, traj = _problem()
    y = nufft_sense(maps, traj)(x)
    y[:, LOST] = 0  # 4 spokes lost, written as zeros
    s = make_slice(_kspace(y, traj, {"density_source": "pipe_menon"}), 0, "scan.h5", None)
    keep = ~LOST
    assert s.kspace.shape == (3, 20, 2 * N) and s.trajectory.shape == (20, 2 * N, 2)
    torch.testing.assert_close(s.trajectory, traj[keep])
    torch.testing.assert_close(s.kspace, y[:, keep].to(torch.complex64))
    # weights the reader computed are computed again for the spokes kept
    torch.testing.assert_close(s.density, pipe_menon_density(traj[keep], (N, N)))
    note = s.notes["lost_readouts"]
    assert "4 of 24 readouts hold no sample in any coil (readouts 0, 6, 12, 18)" in note
    assert "dropped from the data, trajectory and density weights" in note
    # the file's own weights are kept for the spokes kept
    ks = _kspace(y, traj, {"density_source": "file"})
    s = make_slice(ks, 0, "scan.h5", None)
    torch.testing.assert_close(s.density, ks.density[keep])


def test_pipeline_slice_keeps_complete_readouts_untouched():
    maps, x, traj = _problem()
    y = nufft_sense(maps, traj)(x)
    ks = _kspace(y, traj, {"density_source": "pipe_menon"})
    s = make_slice(ks, 0, "scan.h5", None)
    assert s.trajectory is ks.trajectory and s.density is ks.density
    assert "lost_readouts" not in s.notes and "zero_samples" not in s.notes


def test_reader_drops_samples_zero_at_the_end_of_every_readout(tmp_path):
    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

    (path,) = simulate_noncartesian_dataset(tmp_path / "sim", "radial", volumes=1, slices=2,
                                            coils=2, size=(N, N), readouts=SPOKES, snr_db=None)
    ks = read_ismrmrd(path)
    samples = ks.data.shape[-1]
    cut = samples - samples // 4
    data = ks.data.clone()
    data[..., cut:] = 0  # the last quarter of every readout not measured, written as zeros
    short = write_ismrmrd_noncartesian(tmp_path / "short.h5", data, ks.trajectory.float(),
                                       ks.header)
    got = read_ismrmrd(short)
    assert got.data.shape[-1] == cut and got.trajectory.shape[1] == cut
    torch.testing.assert_close(got.data, ks.data[..., :cut])
    torch.testing.assert_close(got.trajectory, ks.trajectory[:, :cut], rtol=0, atol=1e-6)
    note = got.header.extra["zero_samples_note"]
    assert f"readout samples {cut}..{samples - 1} (of {samples}) are zero in every readout" in note
    assert got.header.extra.get("echo_samples") == [samples // 2, cut - samples // 2 - 1]
    assert "zero_samples_note" not in ks.header.extra and "echo_samples" not in ks.header.extra


def test_recon_run_warns_of_lost_readouts_and_zero_samples():
    maps, x, traj = _problem()
    op = nufft_sense(maps, traj)
    y = op(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete data: no word
        recon.run("zero_filled", y, op)
    lost = y.clone()
    lost[:, LOST] = 0
    with pytest.warns(UserWarning, match=r"4 of 24 readouts of y hold no sample in any coil "
                                         r"\(readouts 0, 6, 12, 18\): lost\?"):
        recon.run("zero_filled", lost, op)
    tail = y.clone()
    tail[..., 24:] = 0
    with pytest.warns(UserWarning, match=r"readout samples 24\.\.31 \(of 32\) are zero in every "
                                         "readout and coil: not measured"):
        recon.run("zero_filled", tail, op)
    # readouts the operator's weights ignore are measured by nothing: no warning
    weights = torch.ones(SPOKES, 2 * N, dtype=torch.float64)
    weights[LOST] = 0
    weighted = nufft_sense(maps, traj, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recon.run("zero_filled", weighted(x), weighted)


# 2. lam as a numpy scalar or a tensor ----------------------------------------------------------

BAD_LAMS = [np.float32("nan"), torch.tensor(float("nan")), np.float32("inf"),
            torch.tensor(float("inf")), np.float32(-1.0)]


@pytest.mark.parametrize("lam", BAD_LAMS, ids=repr)
def test_lam_numpy_and_tensor_scalars_are_judged_as_numbers(lam):
    assert "must be finite" in param_problem("lam", lam, 0.0)
    _, op, y = shepp_sense_problem(n=16)
    with pytest.raises(ValueError, match="l1_wavelet: lam must be finite"):
        recon.run("l1_wavelet", y, op, lam=lam, iterations=2)


@pytest.mark.parametrize("lam", BAD_LAMS, ids=repr)
def test_methods_called_directly_refuse_nan_inf_and_negative_lam(lam):
    from mrirecon.recon.ct import tv_ct, tv_pdhg
    from mrirecon.recon.mri import cg_sense, l1_wavelet, tv
    from mrirecon.recon.tgv import tgv

    _, op, y = shepp_sense_problem(n=16)
    ct = ParallelBeam(CTGeometry.parallel((16, 16), num_views=12))
    s = ct(torch.ones(16, 16, dtype=torch.float64))
    for fn, yy, A in ((cg_sense, y, op), (l1_wavelet, y, op), (tv, y, op), (tgv, y, op),
                      (tv_ct, s, ct), (tv_pdhg, s, ct)):
        with pytest.raises(ValueError, match=f"{fn.__name__}: lam must be >= 0 and finite"):
            fn(yy, A, lam=lam, iterations=2)


def test_lam_with_several_values_is_refused_by_name_and_a_0d_array_works():
    _, op, y = shepp_sense_problem(n=16)
    two = torch.tensor([1e-3, 1e-3])
    with pytest.raises(ValueError, match=r"l1_wavelet: lam must be a number, got a tensor of "
                                         r"shape \(2,\)"):
        recon.run("l1_wavelet", torch.stack([y, y]), op, lam=two, iterations=2)
    from mrirecon.recon.mri import cg_sense

    with pytest.raises(ValueError, match=r"cg_sense: lam must be a number, got an array of "
                                         r"shape \(2,\)"):
        cg_sense(y, op, lam=np.array([1e-3, 1e-3]), iterations=2)
    # a 0-d array is its number (was: "unsupported operand type(s) for *: 'numpy.ndarray'")
    a = recon.run("l1_wavelet", y, op, lam=np.array(1e-3), iterations=3)
    b = recon.run("l1_wavelet", y, op, lam=1e-3, iterations=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert param_problem("iterations", np.int64(3), 10) is None  # numpy counts stay counts


# 3. / 4. the trajectory after construction -------------------------------------------------------

def test_nufft_sense_keeps_its_own_trajectory_and_weights():
    maps, x, traj = _problem()
    weights = pipe_menon_density(traj, (N, N))
    op = nufft_sense(maps, traj, weights)
    before = op.gram(x)
    traj[..., 0] *= -1  # the caller reuses its tensors
    weights.mul_(3)
    aha = op.H(op(x))
    assert float((op.gram(x) - aha).norm() / aha.norm()) < GRAM_TOL
    torch.testing.assert_close(op.gram(x), before, rtol=0, atol=0)


def test_nufft_plan_is_not_reused_for_an_inference_tensor_edited_in_place():
    torch.manual_seed(0)
    x = torch.randn(N, N, dtype=torch.complex128)
    with torch.inference_mode():
        traj = golden_angle_radial(8, 2 * N).to(torch.float64).clone()
        nufft(x, traj)
        traj.mul_(0.5)
        k = nufft(x, traj)
        ref = ndft(x, traj)
        maps, _, t = _problem()
        op = nufft_sense(maps, t)  # its own trajectory is a normal tensor: cached plans
        assert not op.trajectory.is_inference()
    assert float((k - ref).norm() / ref.norm()) < GRAM_TOL  # was 1.27: the old plan


# 5. NufftSense.with_maps ----------------------------------------------------------------------

def test_nufft_with_maps_checks_the_maps_as_nufft_sense_does():
    maps, x, traj = _problem()
    op = nufft_sense(maps, traj)
    nan = maps.clone()
    nan[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NufftSense.with_maps: the coil maps hold NaN or Inf"):
        op.with_maps(nan)
    with pytest.raises(ValueError, match="NufftSense.with_maps: the coil maps .* are all zero"):
        op.with_maps(torch.zeros_like(maps))
    with pytest.raises(ValueError, match=r"must be on the operator's image grid \(16, 16\)"):
        op.with_maps(coil_maps(3, 20, 20).to(torch.complex128))
    new = op.with_maps(2 * maps)
    torch.testing.assert_close(new(x), 2 * op(x))


# 6. / 7. trajectories in other units, with NaN, or not radial --------------------------------------

@pytest.mark.parametrize("factor", [2 * math.pi, N], ids=["radians", "cycles/FOV"])
def test_density_and_maps_refuse_trajectories_in_other_units(factor):
    maps, x, traj = _problem()
    y = nufft_sense(maps, traj)(x)
    scaled = traj * factor
    for name, call in (("radial_density", lambda: radial_density(scaled, (N, N))),
                       ("pipe_menon_density", lambda: pipe_menon_density(scaled, (N, N))),
                       ("noncartesian_maps", lambda: noncartesian_maps(y, scaled, (N, N),
                                                                       calib_width=8, crop=0.0))):
        with pytest.raises(ValueError, match=f"{name}: trajectory must be normalised"):
            call()


def test_density_and_maps_refuse_a_nan_spoke_naming_it():
    maps, x, traj = _problem()
    y = nufft_sense(maps, traj)(x)
    bad = traj.clone()
    bad[3, 5] = float("nan")
    for fn in (radial_density, pipe_menon_density):
        with pytest.raises(ValueError, match=r"non-finite \(NaN or Inf\) coordinates in 1 of 24 "
                                             r"readout\(s\) \(first: readout 3"):
            fn(bad, (N, N))
    with pytest.raises(ValueError, match="noncartesian_maps: .*first: readout 3"):
        noncartesian_maps(y, bad, (N, N), calib_width=8, crop=0.0)


def test_radial_density_refuses_a_spiral_and_keeps_radial_spokes():
    spiral = spiral_trajectory(N, 0.22, 8, undersampling_edge=2.0)
    with pytest.raises(ValueError, match="8 of 8 readouts are not straight lines through the "
                                         "k-space centre .* use pipe_menon_density"):
        radial_density(spiral, (N, N))
    traj = golden_angle_radial(SPOKES, 2 * N)
    # coordinates rounded to float32 (as ISMRMRD stores them) are still straight spokes
    w = radial_density(traj.float().double(), (N, N))
    torch.testing.assert_close(w, radial_density(traj, (N, N)), rtol=1e-5, atol=1e-6)
    centre_out = traj[:, N:]  # half spokes from the centre out
    assert torch.isfinite(radial_density(centre_out, (N, N))).all()


# 8. a batch of masks through sense(...).gram --------------------------------------------------------

@pytest.mark.parametrize("grad", [False, True])
def test_sense_gram_of_one_image_with_a_batch_of_column_masks(grad):
    maps = coil_maps(3, N, N).to(torch.complex128)
    m = torch.zeros(N)
    m[::2] = 1
    A = sense(maps, torch.stack([m, m.roll(1)])[:, None])  # masks (2, 1, W)
    x = torch.randn(N, N, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(grad)
    aha = A.H(A(x))
    assert aha.shape == (2, N, N)
    torch.testing.assert_close(A.gram(x), aha, rtol=0, atol=64 * torch.finfo(torch.float64).eps)


def test_a_readout_counts_as_lost_only_when_every_coil_holds_nothing():
    g = torch.Generator().manual_seed(0)
    y = torch.complex(torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g))
    y[:, 1] = 0          # lost: no sample in any coil
    y[0, 3] = 0          # one coil silent on readout 3 (a dead element): still measured
    y[1, 4, :6] = 0      # partly zero in one coil: measured
    assert empty_readouts(y).tolist() == [False, True, False, False, False]
    # slices lead: (slices, coils, readouts, samples) -> (slices, readouts)
    both = torch.stack([y, y.roll(1, dims=1)])
    assert empty_readouts(both).tolist() == [[False, True, False, False, False],
                                            [False, False, True, False, False]]
