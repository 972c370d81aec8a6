"""Hostile non-Cartesian library calls and data (docs/robustness.md): NaN / Inf or out-of-band
trajectories through ``functional.nufft`` (a segfault, NaN images, silent wrapping), trajectory
buffers refilled in place (stale NUFFT plans and Pipe-Menon weights), threads sharing those
caches (a raw KeyError), density weights of
undersampled spokes that were rescaled for the wrong reason, a learned radial model run at an
undersampling it never saw, Pipe-Menon settings that give wrong weights, complex weights."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mrirecon.containers import Header
from mrirecon.core.kinds import real_dtype
from mrirecon.data.simulate_noncartesian import make_trajectory
from mrirecon.functional.density import (cached_pipe_menon_density, gridding_gain,
                                         pipe_menon_density, radial_density)
from mrirecon.functional.nufft import ndft, nufft, nufft_adjoint
from mrirecon.io import read_ismrmrd
from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
from mrirecon.operators import nufft_sense
from mrirecon.pipeline.model_range import nyquist_fraction, range_warnings
from mrirecon.sampling.nonuniform import radial_trajectory

N = 32


def _image(dtype=torch.complex128):
    return torch.randn(N, N, dtype=dtype, generator=torch.Generator().manual_seed(0))


# F1: NaN / Inf coordinates ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_nufft_refuses_non_finite_coordinates_naming_the_readout(value, dtype):
    """FINUFFT segfaulted on a NaN point in the forward transform (exit 139) and returned NaN
    images from the adjoint: refused as nufft_sense and the density functions refuse it."""
    k = radial_trajectory(20, 2 * N).to(real_dtype(dtype)).clone()
    k[3, 5, 0] = float(value)
    x = _image(dtype)
    msg = (r"non-finite \(NaN or Inf\) coordinates in 1 of 20 readout\(s\) \(first: readout 3 "
           r"of trajectory \(20, 64, 2\)\)")
    with pytest.raises(ValueError, match=rf"^nufft: trajectory has {msg}"):
        nufft(x, k)
    with pytest.raises(ValueError, match=rf"^nufft_adjoint: trajectory has {msg}"):
        nufft_adjoint(torch.ones(20, 2 * N, dtype=dtype), k, (N, N))
    with torch.inference_mode():  # not cached: checked on every call
        with pytest.raises(ValueError, match="non-finite"):
            nufft(x, k.clone())


def test_nufft_with_a_nan_trajectory_does_not_crash_the_process():
    """The crash itself, in a child process (a regression would kill the test run)."""
    code = ("import torch\nfrom mrirecon.functional.nufft import nufft\n"
            "from mrirecon.sampling.nonuniform import radial_trajectory\n"
            "k = radial_trajectory(20, 64).clone(); k[3, 5, 0] = float('nan')\n"
            "try:\n    nufft(torch.randn(32, 32, dtype=torch.complex64), k)\n"
            "except ValueError as e:\n    print('refused:', e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.startswith("refused: nufft: trajectory has non-finite")


# F5: coordinates in other units -------------------------------------------------------------

@pytest.mark.parametrize("factor, peak", [(2 * math.pi, "3.142"), (N, "16")])
def test_nufft_refuses_radians_and_cycles_per_fov(factor, peak):
    """Radians (torchkbnufft) and cycles/FOV (sigpy) were wrapped into the band: errors 1.40."""
    k = radial_trajectory(20, 2 * N).to(torch.float64) * factor
    for call in (lambda: nufft(_image(), k),
                 lambda: nufft_adjoint(torch.ones(20, 2 * N, dtype=torch.complex128), k, (N, N))):
        with pytest.raises(ValueError, match=rf"must be normalised to \[-0.5, 0.5\) .*max \|k\| = "
                                             rf"{peak}\. .*by 2 pi"):
            call()
    band = radial_trajectory(20, 2 * N).to(torch.float64)  # the band's edge itself is accepted
    band[0, 0] = torch.tensor([-0.5, 0.5])
    assert torch.isfinite(nufft(_image(), band)).all()


# F2: a trajectory buffer refilled in place --------------------------------------------------

def _frames(count=3):
    return [radial_trajectory(40, 2 * N, golden=True, seed=f).numpy() for f in range(count)]


@pytest.mark.parametrize("via", ["from_numpy", "numpy_view"])
def test_nufft_plans_follow_a_buffer_refilled_in_place(via):
    """A numpy buffer filled per frame and wrapped with torch.from_numpy (or a tensor written
    through .numpy()) keeps its address and version: the cached plan of the first frame was
    used for the others (error 1.36-1.39 against the exact NDFT)."""
    x = _image(torch.complex64)
    buf = np.empty((40, 2 * N, 2), np.float32)
    held = torch.from_numpy(buf)
    for frame in _frames():
        buf[:] = frame
        k = torch.from_numpy(buf) if via == "from_numpy" else held
        ref = ndft(x, k)
        assert float((nufft(x, k) - ref).norm() / ref.norm()) < 1e-4
        y = torch.randn(40, 2 * N, dtype=torch.complex64,
                        generator=torch.Generator().manual_seed(1))
        adj = nufft_adjoint(y, k, (N, N))
        fresh = nufft_adjoint(y, torch.from_numpy(frame.copy()), (N, N))
        assert float((adj - fresh).norm() / fresh.norm()) < 1e-6


def test_nufft_plan_of_a_refilled_buffer_checks_the_new_values():
    """A NaN written into a buffer whose plan is cached is refused, not handed to FINUFFT."""
    buf = np.empty((40, 2 * N, 2), np.float32)
    buf[:] = _frames(1)[0]
    k = torch.from_numpy(buf)
    nufft(_image(torch.complex64), k)  # cached
    buf[7, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"first: readout 7"):
        nufft(_image(torch.complex64), torch.from_numpy(buf))


def test_pipe_menon_weights_follow_a_buffer_refilled_in_place():
    """The density's spreading plans are cached the same way: weights of the previous
    trajectory came back (rel. difference 1.49, sum 2.79x); the per-tensor cache of the models
    (cached_pipe_menon_density) kept them for a tensor written through .numpy()."""
    a = radial_trajectory(40, 2 * N, golden=True, seed=0).to(torch.float64).numpy()
    b = a * 0.5
    buf = np.empty_like(a)
    buf[:] = a
    pipe_menon_density(torch.from_numpy(buf), (N, N))
    buf[:] = b
    torch.testing.assert_close(pipe_menon_density(torch.from_numpy(buf), (N, N)),
                               pipe_menon_density(torch.from_numpy(b.copy()), (N, N)))
    held = torch.from_numpy(a.copy())
    first = cached_pipe_menon_density(held, (N, N))
    held.numpy()[:] = b
    again = cached_pipe_menon_density(held, (N, N))
    assert not torch.equal(first, again)
    torch.testing.assert_close(again, pipe_menon_density(torch.from_numpy(b.copy()), (N, N)))


# F6: Pipe-Menon settings --------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"iterations": 0}, "iterations must be an integer >= 1"),
    ({"iterations": -3}, "iterations must be an integer >= 1"),
    ({"iterations": 2.5}, "iterations must be an integer >= 1"),
    ({"iterations": True}, "iterations must be an integer >= 1"),
    ({"oversampling": 1.0}, "oversampling must be a number >= 2"),
    ({"oversampling": 0.5}, "oversampling must be a number >= 2"),
    ({"oversampling": 1.5}, "oversampling must be a number >= 2"),
    ({"oversampling": float("nan")}, "oversampling must be a number >= 2"),
    ({"oversampling": float("inf")}, "oversampling must be a number >= 2"),
    ({"eps": 0.0}, "eps must be a number in"),
])
def test_pipe_menon_refuses_settings_that_give_wrong_weights(kw, match):
    """iterations 0 / -3 returned constant weights (a gridded image 150x too bright),
    oversampling 1 / 0.5 failed with a bare FINUFFT RuntimeError, 1.25 / 1.5 gave weights that
    grid a smooth object with 17 % / 7 % error."""
    k = radial_trajectory(20, 2 * N)
    with pytest.raises(ValueError, match=rf"^pipe_menon_density: {match}"):
        pipe_menon_density(k, (N, N), **kw)


def test_pipe_menon_accepts_integral_settings_unchanged():
    k = radial_trajectory(20, 2 * N)
    base = pipe_menon_density(k, (N, N))
    assert torch.equal(pipe_menon_density(k, (N, N), iterations=np.int64(30), oversampling=2),
                       base)
    assert torch.equal(pipe_menon_density(k, (N, N), iterations=30.0), base)
    assert torch.isfinite(pipe_menon_density(k, (N, N), oversampling=3.0)).all()


# F7: complex weights ------------------------------------------------------------------------

@pytest.mark.parametrize("as_numpy", [False, True])
def test_nufft_sense_refuses_complex_weights(as_numpy):
    """Complex weights were cast to float64 before the complex check: the real part was kept
    (numpy: without a word)."""
    k = radial_trajectory(20, 2 * N)
    w = radial_density(k, (N, N)).to(torch.complex128) * (1 + 1j)
    maps = torch.ones(1, N, N, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"^nufft_sense: weights must be real.*complex128"):
        nufft_sense(maps, k, w.numpy() if as_numpy else w)
    real = nufft_sense(maps, k, w.real.numpy() if as_numpy else w.real)
    torch.testing.assert_close(real.weights, w.real.float())


# F3: density weights of undersampled radial spokes ------------------------------------------

def _file(tmp_path, size, spokes, scale=1.0):
    """An ISMRMRD radial file with the simulator's ramp weights (times ``scale``)."""
    traj, ramp = make_trajectory("radial", (size, size), spokes)
    header = Header(encoded_matrix=(size, size, 1), recon_matrix=(size, size, 1),
                    extra={"trajectory": "radial"})
    x = torch.exp(-torch.linspace(-2, 2, size)[:, None] ** 2 - torch.linspace(-2, 2, size) ** 2)
    y = nufft(x.to(torch.complex64)[None, None], traj.float()).expand(1, 2, -1, -1)
    path = tmp_path / f"r{size}_{spokes}_{scale:g}.h5"
    write_ismrmrd_noncartesian(path, y, traj, header, ramp * scale)
    return path, traj, ramp


@pytest.mark.parametrize("size, spokes", [(64, 24), (128, 40)])
def test_correct_ramp_weights_of_undersampled_spokes_are_kept(tmp_path, size, spokes):
    """The reader compared the file's weight sum with Pipe-Menon's, which saturate in the
    sparse periphery of undersampled spokes (sums 0.46 / 0.39 of the ramp's): the correct ramp
    was multiplied by 0.46 / 0.39 (mri_radial_cs at 128 x 128 / 40 spokes 39.88 / 38.82 dB
    instead of 42.03 / 40.78) with a note blaming the file. Both grid a smooth object at its
    intensity within 1.3 %: the file's scale is kept."""
    path, traj, ramp = _file(tmp_path, size, spokes)
    ks = read_ismrmrd(path)
    assert "density_scale_note" not in ks.header.extra
    torch.testing.assert_close(ks.density, ramp.float().double())
    assert abs(gridding_gain(ks.density, ks.trajectory, (size, size)) - 1) < 0.02
    assert float(pipe_menon_density(ks.trajectory, (size, size)).sum() / ks.density.sum()) < 0.5


@pytest.mark.parametrize("scale", [1e-3, 0.3, 5.0, 1e4])
def test_weights_at_another_scale_are_still_rescaled(tmp_path, scale):
    """What the rescale is for: weights of another convention (x 1000 gave TV 16.1 dB instead
    of 32.1) grid at the library's intensity after reading, on undersampled spokes too."""
    path, traj, ramp = _file(tmp_path, 64, 24, scale)
    ks = read_ismrmrd(path)
    assert "multiplied by" in ks.header.extra["density_scale_note"]
    assert "gridded an image at" in ks.header.extra["density_scale_note"]
    want = gridding_gain(pipe_menon_density(ks.trajectory, (64, 64)), ks.trajectory, (64, 64))
    assert abs(gridding_gain(ks.density, ks.trajectory, (64, 64)) / want - 1) < 1e-6
    ratio = ks.density / ramp
    assert float(ratio.max() / ratio.min() - 1) < 1e-5  # the file's shape


def test_gridding_gain_is_the_centre_of_a_gridded_smooth_object():
    """gridding_gain (analytic) equals N^H (w N x) at the centre of the Gaussian it assumes."""
    n = 64
    traj, ramp = make_trajectory("radial", (n, n), 40)
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    obj = torch.exp(-(xx**2 + yy**2) / (2 * (n / 6) ** 2)).to(torch.complex128)
    for w in (ramp, pipe_menon_density(traj, (n, n))):
        grid = nufft_adjoint(nufft(obj, traj) * w, traj, (n, n)).real[n // 2, n // 2]
        assert abs(gridding_gain(w, traj, (n, n)) / float(grid) - 1) < 2e-3


# F4: a learned radial model at an undersampling it never saw ---------------------------------

def test_shipped_radial_card_states_the_undersampling_it_saw():
    """modl_radial_sim saw 64 x 64 / 40 spokes and 128 x 128 / 96 (0.40 and 0.48 of Nyquist's
    pi/2 N spokes); its matrix and spokes intervals, checked one by one, let 128 x 128 with 40
    spokes (0.20) pass without a word, where it lost 5.8-8 dB to TV. The card's range is what
    `mrirecon train radial` writes for its command's geometries."""
    from mrirecon.training.radial import geometries, nyquist_fraction_range
    from mrirecon.training.weights import load_pretrained, model_card

    card = model_card("modl_radial_sim")
    shipped = nyquist_fraction_range(geometries((64, 128), (40, 96)))
    assert card["training_range"]["nyquist_fraction"] == shipped == [0.397, 0.478]
    assert "--size 64 128 --spokes 40 96" in card["data"]["reproduce"]
    loaded = load_pretrained("modl_radial_sim").model_card
    assert loaded["training_range"]["nyquist_fraction"] == shipped
    for matrix, spokes in (((64, 64), 40), ((128, 128), 96), ((96, 96), 60)):
        assert range_warnings(card, matrix=matrix, spokes=spokes, coils=8,
                              trajectory="radial") == []
    (msg,) = range_warnings(card, matrix=(128, 128), spokes=40, coils=8, trajectory="radial")
    assert msg.startswith("undersampling: 40 spokes on a 128 x 128 grid, 0.199 of Nyquist's 201")
    assert "below the density_weighted training range 0.397 .. 0.478" in msg
    assert range_warnings(card, matrix=(128, 128), spokes=64, coils=8)  # 0.32: outside
    # spirals are judged by the trajectory kind, not by a radial ratio
    assert range_warnings(card, matrix=(128, 128), spokes=40, trajectory="spiral") == [
        "trajectory spiral is outside the density_weighted training range (radial)"]


def test_more_spokes_than_trained_are_no_warning():
    """Denser sampling than the card's is an easier problem: mri_radial_learned on a clean 64 x
    64 brain scored 38.19 dB at 40 spokes (0.40 of Nyquist, in range), 39.38 / 39.62 at 64 / 96
    (TV 39.44 / 39.47), yet warned "0.637 of Nyquist … outside … 0.397 .. 0.478" and, at 128 x
    128, "readouts 128 is outside 40 .. 96": every default simulated radial file did. Only the
    lower end of nyquist_fraction is checked, and spokes above the card's end pass when the card
    states nyquist_fraction; fewer spokes still warn."""
    from mrirecon.training.weights import model_card

    card = model_card("modl_radial_sim")
    for matrix, spokes in (((64, 64), 64), ((64, 64), 96), ((128, 128), 128), ((128, 128), 201)):
        assert range_warnings(card, matrix=matrix, spokes=spokes, coils=8,
                              trajectory="radial") == [], (matrix, spokes)
    msgs = range_warnings(card, matrix=(64, 64), spokes=24, coils=8, trajectory="radial")
    assert "readouts (spokes / interleaves) 24 is outside the density_weighted training range " \
           "40 .. 96" in msgs
    assert any(m.startswith("undersampling: 24 spokes on a 64 x 64 grid") and "below" in m
               for m in msgs), msgs
    # a card without nyquist_fraction keeps both ends of its spokes interval
    bare = {"model": {"name": "m"}, "training_range": {"spokes": [40, 96]}}
    assert range_warnings(bare, matrix=(128, 128), spokes=128) == [
        "readouts (spokes / interleaves) 128 is outside the m training range 40 .. 96"]


def test_the_card_reader_checks_the_undersampling_interval():
    """`nyquist_fraction` is an interval of `training_range`: a malformed one is refused when the
    card is read, naming it, as every interval there is."""
    from mrirecon.training.weights import check_training_range

    card = {"model": {"name": "m"}, "training_range": {"spokes": [1, 500]}}
    assert range_warnings(card, matrix=(128, 128), spokes=40) == []
    card["training_range"]["nyquist_fraction"] = [0.3, 0.5]
    check_training_range(card["training_range"], "m.yaml")
    (msg,) = range_warnings(card, matrix=(128, 128), spokes=40)
    assert "0.199 of Nyquist's 201" in msg and "training range 0.3 .. 0.5" in msg
    assert range_warnings(card, matrix=(128, 128), spokes=80) == []
    for bad in (["a", 1], 0.4, [0.5, 0.3], [0.3, float("nan")]):
        with pytest.raises(ValueError, match=r"m.yaml: training_range.nyquist_fraction: expected"):
            check_training_range({"nyquist_fraction": bad}, "m.yaml")
    assert math.isclose(nyquist_fraction(96, (128, 96)), 96 / (math.pi / 2 * 128))
    assert math.isclose(nyquist_fraction(80, (64, 64), centre_out=True),
                        nyquist_fraction(40, (64, 64)))


@pytest.mark.parametrize("centre_out", [False, True])
def test_the_pipeline_gives_the_card_the_slice_undersampling(centre_out):
    """mrirecon run's (and bench's) check reads the spokes off the slice; centre-out spokes
    are half lines: 80 of them sample as 40 full spokes."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.volume import _warn_outside_range
    from mrirecon.training.weights import model_card

    config = load_pipeline("mri_radial_learned", [])[0]
    traj = radial_trajectory(80 if centre_out else 40, 256)
    if centre_out:
        traj = traj[:, 128:]
    s = SimpleNamespace(trajectory=traj, image_shape=(128, 128), kspace=torch.zeros(8, 1),
                        header=Header(encoded_matrix=(128, 128, 1), recon_matrix=(128, 128, 1),
                                      extra={"trajectory": "radial"}))
    model = SimpleNamespace(model_card=model_card(config.reconstruct.weights))
    msgs = _warn_outside_range(config, model, s)
    assert [m for m in msgs if m.startswith("undersampling:")], msgs
    assert any("0.199 of Nyquist" in m for m in msgs), msgs


def test_mrirecon_run_records_the_undersampling_warning(tmp_path):
    """End to end: mri_radial_learned on 48 x 48 data with 16 spokes (0.21 of Nyquist) logs the
    warning and records it in provenance.json, as the other range warnings."""
    import json

    from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    data = tmp_path / "in"
    simulate_noncartesian_dataset(data, "radial", volumes=1, slices=1, coils=4, size=(48, 48),
                                  seed=5, readouts=16, resolution=2)
    config, text = load_pipeline("mri_radial_learned", ["calibrate.calib_width=16",
                                                        "calibrate.kernel_width=4",
                                                        "export.formats=[hdf5]"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(data / "*.h5")], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["status"] == "ok"
    assert any("undersampling: 16 spokes on a 48 x 48 grid, 0.212 of Nyquist's 75" in w
               for w in f["warnings"]), f["warnings"]


# a19 F1: threads reconstructing at once share the plan and density caches -------------------

def _race(work, threads=8, seconds=1.5):
    """``work(t, i)`` called over and over by ``threads`` threads for ``seconds``, with the
    interpreter switching threads every microsecond (a cache operation interrupted between
    its lookup and its update shows up within a second); the exceptions raised, as text."""
    import threading
    import time
    import traceback

    errors, stop = [], time.monotonic() + seconds
    start = threading.Barrier(threads)

    def loop(t):
        start.wait()
        i = 0
        while time.monotonic() < stop and len(errors) < 5:
            try:
                work(t, i)
            except Exception:  # noqa: BLE001 - any failure is the finding
                errors.append(traceback.format_exc(limit=-3))
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for p in pool:
            p.start()
        for p in pool:
            p.join()
    finally:
        sys.setswitchinterval(interval)
    return errors


def test_nufft_from_many_threads_at_once_never_fails_on_the_plan_cache():
    """8 threads each run NUFFTs over their own churning set of trajectories (40 in all, more
    than the 16 plans kept): one thread evicted a plan between another's lookup and its
    move_to_end / del, a raw KeyError from functional/nufft.py (42 of 1264 scans of a
    service's reconstructions at 8 threads)."""
    trajs = [[radial_trajectory(3 + i + 5 * t, 8).to(torch.float32) for i in range(5)]
             for t in range(8)]
    x = torch.randn(8, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    ref = {id(k): ndft(x, k) for ts in trajs for k in ts}

    def work(t, i):
        k = trajs[t][i % 5] if i % 3 else trajs[(t + 1) % 8][0]  # shared and own trajectories
        y = nufft(x, k)
        assert float((y - ref[id(k)]).norm() / ref[id(k)].norm()) < 1e-4

    assert _race(work) == []


def test_cached_density_from_many_threads_at_once_never_fails():
    """The models' per-trajectory density cache (4 entries) under 8 threads over 12
    trajectories: the same lookup / move_to_end / evict race as the plan cache."""
    trajs = [radial_trajectory(4 + i, 8).to(torch.float32) for i in range(12)]
    ref = {id(k): pipe_menon_density(k, (8, 8)) for k in trajs}

    def work(t, i):
        k = trajs[(t + i) % 12]
        assert torch.equal(cached_pipe_menon_density(k, (8, 8)), ref[id(k)])

    assert _race(work) == []


def test_radial_density_refuses_a_slightly_bent_spoke_but_takes_float32_rounding():
    traj = radial_trajectory(16, 32)
    radial_density(traj.float(), (32, 32))  # single-precision rounding: accepted
    bent = traj.clone()
    bent[5, :, 0] += 1e-3 * torch.linspace(-1, 1, 32, dtype=torch.float64) ** 2  # 0.03 cells
    with pytest.raises(ValueError, match="not straight lines through the k-space centre"):
        radial_density(bent, (32, 32))
