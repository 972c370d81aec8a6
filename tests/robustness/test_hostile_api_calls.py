"""Notebook calls of the public API with a plausible mistake, second sweep: a wrong result must not
come back without an error, and the error must name the argument (not a torch or MKL internal)."""

from __future__ import annotations

import pytest
import torch

from mrirecon.functional import fft2c
from tests.models.problems import coil_maps, phantom


def _full_kspace(n: int = 32, coils: int = 4) -> torch.Tensor:
    return fft2c(coil_maps(coils, n, n) * phantom(1, n, n)[0])


@pytest.mark.parametrize("case, message", [
    ("nan", r"the \(12, 12\) calibration block of kspace holds 1 NaN or Inf samples"),
    ("zero", r"the \(12, 12\) calibration block of kspace is all zero: k-space must be centred"),
    ("thresh", r"thresh must be a number in \[0, 1\) .*got 1.0"),
    ("thresh_nan", r"thresh must be a number in \[0, 1\) .*got nan"),
])
def test_espirit_names_a_calibration_it_cannot_use(case, message):
    """NaN or no data in the calibration block, or a thresh that keeps no kernel, failed inside
    an FFT of no kernels: "MKL FFT error: Inconsistent configuration parameters"."""
    from mrirecon.calib import espirit_maps

    k = _full_kspace()
    thresh = {"thresh": 1.0, "thresh_nan": float("nan")}.get(case, 0.02)
    if case == "nan":
        k[1, 16, 15] = float("nan")
    elif case == "zero":
        k = k * 0
    with pytest.raises(ValueError, match="espirit_maps: " + message):
        espirit_maps(k, calib_width=12, kernel_width=4, thresh=thresh)


@pytest.mark.parametrize("crop", [1.0, 1.5, float("nan")])
def test_espirit_refuses_a_crop_that_zeroes_every_map(crop):
    """The eigenvalue is about 1 where the coils see signal: crop 1.5 (or NaN) returned all-zero
    maps without a word, and cg_sense on them an all-zero image."""
    from mrirecon.calib import espirit_maps

    with pytest.raises(ValueError, match=r"espirit_maps: crop must be a number below 1 .* zero every"):
        espirit_maps(_full_kspace(), calib_width=12, kernel_width=4, crop=crop)
    assert espirit_maps(_full_kspace(), calib_width=12, kernel_width=4, crop=0.95).abs().amax() > 0.9


@pytest.mark.parametrize("acceleration", [float("inf"), 1e6, 2049.0])
def test_variable_density_refuses_an_acceleration_that_leaves_no_sample(acceleration):
    """The docstring promises round(H W / acceleration) samples: inf or 1e6 gave an all-zero mask,
    which sense() took and cg_sense reconstructed as an all-zero image."""
    from mrirecon.sampling import variable_density

    with pytest.raises(ValueError, match=r"variable_density: acceleration .* leaves no sample of "
                                         r"the 32 x 32 grid \(at most 1024\)"):
        variable_density((32, 32), acceleration, seed=0)
    assert int(variable_density((32, 32), 1024.0, seed=0).sum()) == 1


@pytest.mark.parametrize("how", ["fftshift", "flip", "roll"])
def test_k_space_undersampled_with_another_mask_than_the_operator_is_refused(how):
    """y masked by one pattern, op built with another (an fftshifted or flipped mask): the samples
    outside op's mask were dropped and its empty columns taken as measured zeros, cg_sense 13-18
    instead of 25 dB, no error. Fully sampled y (retrospective undersampling by op), y with zero
    padding at the edges and y masked by op's own mask still run."""
    from mrirecon import recon
    from mrirecon.operators import sense
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    m = op.mask.flatten()
    other = {"fftshift": torch.fft.fftshift(m), "flip": m.flip(-1), "roll": torch.roll(m, 1)}[how]
    with pytest.raises(ValueError, match=r"cg_sense: y does not fit the operator's mask: \d+ column"
                                         r"\(s\) of y hold data that the mask drops .* build op "
                                         r"with the mask of y"):
        recon.run("cg_sense", y, sense(op.maps, other), iterations=3)
    with pytest.raises(ValueError, match=r"zero_filled: y does not fit .*\(sample 1 of 2\)"):
        recon.run("zero_filled", torch.stack([y, y]), sense(op.maps, torch.stack([m, other])[:, None]))
    full = fft2c(op.maps * op.H(y))  # fully sampled, with a zero-padded band at both edges
    full[..., :3] = 0
    full[..., -2:] = 0
    for data in (y, full):
        assert recon.run("cg_sense", data, op, iterations=3).shape == (32, 32)


def test_nufft_sense_refuses_coil_maps_with_nan_as_the_cartesian_operator_does():
    """sense() refused NaN maps; nufft_sense took them and zero_filled returned an image with
    NaN pixels (192 of 1024 here), without a word."""
    from mrirecon.operators import nufft_sense

    maps = coil_maps(2, 16, 16)
    maps[:, :3] = float("nan")
    traj = (torch.rand(8, 20, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.99
    with pytest.raises(ValueError, match=r"nufft_sense: the coil maps hold NaN or Inf values at 48 "
                                         r"pixel\(s\)"):
        nufft_sense(maps, traj)


def test_nmse_refuses_an_all_zero_reference_as_psnr_and_ssim_do():
    """psnr / ssim refused an all-zero gt; nmse returned inf (nan for an all-zero pred)."""
    from mrirecon.metrics import nmse

    gt = torch.zeros(2, 16, 16, dtype=torch.float64)
    for pred in (gt + 0.1, gt):
        with pytest.raises(ValueError, match=r"nmse: gt of shape \(2, 16, 16\) is all zero"):
            nmse(gt, pred)
        with pytest.raises(ValueError, match=r"nmse: gt of shape \(2, 16, 16\) is all zero"):
            nmse(gt.numpy(), pred.numpy())
    assert nmse(gt + 1, gt + 1) == 0.0


@pytest.mark.parametrize("name", ["varnet_brain_sim", "modl_brain_sim"])
def test_shipped_models_name_nan_data(name):
    """A shipped VarNet called on k-space with a NaN or Inf sample said "SenseOperator: the coil
    maps hold NaN or Inf values at 1024 pixel(s) (maps divided by a zero sum of squares outside a
    crop?)": it blamed the maps the user never gave (MoDL: "cg: the right-hand side holds NaN")."""
    from mrirecon.operators import sense
    from mrirecon.training.weights import load_pretrained
    from tests.models.problems import column_mask

    op = sense(coil_maps(4, 32, 32), column_mask(32, acs=8))
    y = op(phantom(1, 32, 32))
    y[0, 1, 3, 16] = float("inf")
    with torch.no_grad(), pytest.raises(ValueError, match=rf"{name}.pt: the data y \(1, 4, 32, 32\) "
                                                           r"hold 1 NaN or Inf values"):
        load_pretrained(name)(y, op)


@pytest.mark.parametrize("name", ["varnet_brain_sim", "modl_brain_sim"])
def test_shipped_models_name_data_that_do_not_fit_the_operator(name):
    """k-space 30 columns wide for a 32-column operator failed inside the VarNet with "The size of
    tensor a (32) must match the size of tensor b (30) at non-singleton dimension 3"; op=None in a
    MoDL with "'NoneType' object has no attribute 'range_shape'"."""
    from mrirecon.operators import sense
    from mrirecon.training.weights import load_pretrained
    from tests.models.problems import column_mask

    op = sense(coil_maps(4, 32, 32), column_mask(32, acs=8))
    y = op(phantom(1, 32, 32))
    model = load_pretrained(name)
    with torch.no_grad():
        with pytest.raises(ValueError, match=rf"{name}.pt: the data y for SenseOperator must have "
                                             r"shape \(\.\.\., 4, 32, 32\), got \(1, 4, 32, 30\)"):
            model(y[..., :30], op)
        with pytest.raises(TypeError, match=rf"{name}.pt: called as model\(y, op\) with op None"):
            model(y, None)


def test_espirit_calibrates_on_the_acquired_centre_when_calib_width_is_wider():
    """A 10-column centre band with the default calib_width 24 (a fastMRI 8x mask at 320 columns
    acquires 13): the block held 14 unsampled zero columns and the maps were poor, no word."""
    from mrirecon.calib import espirit_maps

    mask = torch.zeros(48, dtype=torch.bool)
    mask[::4] = True
    mask[19:29] = True  # columns 19..28: a band of 10 around DC (24)
    y = _full_kspace(48) * mask
    with pytest.warns(UserWarning, match=r"espirit_maps: kspace is fully sampled over a centred "
                                         r"\(24, 10\) block only, smaller than calib_width \(24, 24\)"
                                         r" .* pass calib_width=\(24, 10\)"):
        maps = espirit_maps(y, kernel_width=4, crop=0.0)
    assert torch.equal(maps, espirit_maps(y, calib_width=(24, 10), kernel_width=4, crop=0.0))
    with pytest.raises(ValueError, match=r"espirit_maps: kspace is fully sampled over a centred "
                                         r"\(24, 10\) block only .* kernel_width \(12, 12\) takes "
                                         r"fewer than 3 positions .* pass kernel_width=\(12, 8\)"):
        espirit_maps(y, kernel_width=12)


def test_solvers_take_numpy_integer_iteration_counts():
    """iterations=np.int64(3) (what np.arange and parameter grids give) was refused: "cg:
    iterations must be an integer >= 1, got np.int64(3)". Bools stay refused."""
    import numpy as np

    from mrirecon import recon
    from mrirecon.solvers import cg
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    for n in np.arange(1, 3):
        assert torch.equal(recon.run("cg_sense", y, op, iterations=n),
                           recon.run("cg_sense", y, op, iterations=int(n)))
    b = torch.ones(4)
    assert torch.equal(cg(lambda x: 2 * x, b, iterations=np.int32(3)), cg(lambda x: 2 * x, b, iterations=3))
    for bad in (True, np.int64(0)):
        with pytest.raises(ValueError, match=r"cg: iterations must be an integer >= 1, got"):
            cg(lambda x: 2 * x, b, iterations=bad)


@pytest.mark.parametrize("method", ["cg_sense", "l1_wavelet"])
def test_a_start_image_of_another_shape_is_refused(method):
    """x0 of shape (2, 32, 32) for one y (4, 32, 32) broadcast: cg_sense returned 2 images, no
    word. An x0 of the image's shape still starts the solver."""
    from mrirecon import recon
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    lam = {"l1_wavelet": 1e-3}.get(method, 0.0)
    x0 = torch.zeros(2, 32, 32, dtype=y.dtype)
    with pytest.raises(ValueError, match=rf"{method}: x0 must have the shape \(32, 32\) of the "
                                         r"image of y \(4, 32, 32\) \(A.H\(y\)\), got \(2, 32, 32\)"):
        recon.run(method, y, op, lam=lam, iterations=2, x0=x0)
    with pytest.raises(TypeError, match=rf"{method}: x0 must be a torch.Tensor, got ndarray"):
        recon.run(method, y, op, lam=lam, iterations=2, x0=x0[0].numpy())
    assert recon.run(method, y, op, lam=lam, iterations=2, x0=x0[0]).shape == (32, 32)


@pytest.mark.parametrize("method", ["cg_sense", "l1_wavelet", "tv"])
def test_one_start_image_for_a_batch_of_slices_starts_each(method):
    """One (H, W) start for y of 2 slices broadcasts to both (it did before the shape check,
    which refused it for a while): each slice's image equals the one of that slice alone."""
    from mrirecon import recon
    from tests.helpers import shepp_sense_problem

    x, op, y = shepp_sense_problem(n=32)
    batch = torch.stack([y, 0.5 * op(torch.from_numpy(x.copy()).flip(-1).to(y.dtype))])
    lam = {"l1_wavelet": 1e-3, "tv": 1e-3}.get(method, 0.0)
    x0 = 0.3 * op.H(y)  # a start the result depends on after 2 iterations
    both = recon.run(method, batch, op, lam=lam, iterations=2, x0=x0)
    assert both.shape == (2, 32, 32)
    for i in range(2):
        alone = recon.run(method, batch[i], op, lam=lam, iterations=2, x0=x0)
        eps = torch.finfo(alone.real.dtype).eps
        assert float((both[i] - alone).abs().max()) <= 1e3 * eps * float(alone.abs().max())
    zero = recon.run(method, batch, op, lam=lam, iterations=2)
    assert float((both - zero).abs().max()) > 1e-3 * float(zero.abs().max())


@pytest.mark.parametrize("case, message", [
    ("mask", r"SenseOperator: mask \(32,\) is all zero: no k-space sample is kept"),
    ("batch", r"SenseOperator: mask \(2, 1, 32\): 1 of its 2 masks are all zero"),
    ("maps", r"SenseOperator: the coil maps \(4, 32, 32\) are all zero"),
])
def test_sense_refuses_an_all_zero_mask_or_all_zero_maps(case, message):
    """sense(maps, mask) took an all-zero mask (or all-zero maps: an ESPIRiT crop that zeroed
    every pixel) and cg_sense returned an all-zero image, no error."""
    from mrirecon.operators import sense

    maps, mask = coil_maps(4, 32, 32), torch.ones(32)
    if case == "mask":
        mask = mask * 0
    elif case == "batch":
        mask = torch.stack([mask, mask * 0])[:, None]
    else:
        maps = maps * 0
    with pytest.raises(ValueError, match=message):
        sense(maps, mask)


def test_a_phase_or_weights_of_another_shape_is_named():
    """cg_sense(phase=<(32, 30)>) failed with torch's "The expanded size of the tensor (32) must
    match the existing size (30)"; nufft_sense(weights=<(8, 19)>) with the same broadcast error,
    naming neither argument."""
    from mrirecon.operators import nufft_sense
    from mrirecon.recon import cg_sense
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    with pytest.raises(ValueError, match=r"cg_sense: phase must have the shape \(32, 32\) of the "
                                         r"image of y \(4, 32, 32\) .*got \(32, 30\)"):
        cg_sense(y, op, iterations=2, phase=torch.ones(32, 30, dtype=torch.complex64))
    assert cg_sense(y, op, iterations=2, phase=torch.ones(1, 32, dtype=torch.complex64)).shape == (32, 32)
    traj = (torch.rand(8, 20, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.99
    with pytest.raises(ValueError, match=r"nufft_sense: weights must have the shape \(8, 20\) of "
                                         r"the trajectory's samples \(trajectory \(8, 20, 2\)\) .*"
                                         r"got \(8, 19\)"):
        nufft_sense(coil_maps(2, 16, 16), traj, weights=torch.ones(8, 19))
    assert nufft_sense(coil_maps(2, 16, 16), traj, weights=torch.ones(20)).weights.shape == (8, 20)


@pytest.mark.parametrize("name", ["varnet_brain_sim", "modl_brain_sim"])
def test_shipped_models_name_numpy_data(name):
    """A MoDL given numpy k-space said "data y must have a leading batch axis and at least 4 dims,
    got (1, 4, 32, 32)" (the shape was right, the type wrong); a VarNet raised "'numpy.ndarray'
    object has no attribute 'is_complex'"."""
    from mrirecon.operators import sense
    from mrirecon.training.weights import load_pretrained
    from tests.models.problems import column_mask

    op = sense(coil_maps(4, 32, 32), column_mask(32, acs=8))
    y = op(phantom(1, 32, 32))
    with torch.no_grad(), pytest.raises(TypeError, match=rf"{name}.pt: the data y must be a "
                                                          r"torch.Tensor, got numpy.ndarray "
                                                          r"\(1, 4, 32, 32\); convert it with "
                                                          r"torch.from_numpy\(y\)"):
        load_pretrained(name)(y.numpy(), op)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, float("nan"), "1e-6"])
def test_nufft_refuses_a_tolerance_outside_0_1(eps):
    """nufft_sense(eps=0) and eps=NaN were taken: FINUFFT raised 0 to machine precision with a
    warning, took NaN (and 1 or more: its crudest 2-point kernel) without a word."""
    from mrirecon.functional.nufft import nufft
    from mrirecon.operators import nufft_sense

    traj = (torch.rand(8, 20, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.99
    message = r"eps must be a number in \(0, 1\) \(the NUFFT's relative tolerance, e.g. 1e-6\), got"
    with pytest.raises(ValueError, match="nufft_sense: " + message):
        nufft_sense(coil_maps(2, 16, 16), traj, eps=eps)
    with pytest.raises(ValueError, match="nufft: " + message):
        nufft(phantom(1, 16, 16), traj, eps=eps)
    assert nufft_sense(coil_maps(2, 16, 16), traj, eps=1e-3).eps == 1e-3


def test_mask_functions_name_a_seed_that_is_no_integer():
    """RandomMask(...)(64, seed=1.5) failed with numpy's "Cannot cast scalar from dtype('float64')
    to dtype('int64') according to the rule 'safe'"; poisson_disc / variable_density with
    "SeedSequence expects int or sequence of ints for entropy not 1.5"."""
    import numpy as np

    from mrirecon.sampling import RandomMask, file_seed, poisson_disc, variable_density

    f = RandomMask([0.08], [4])
    for call in (lambda: f(64, seed=1.5), lambda: RandomMask([0.08], [4], seed=1.5),
                 lambda: f(64, seed=(1, 2.5))):
        with pytest.raises(TypeError, match=r"RandomMask: seed must be an integer or a tuple of "
                                            r"integers \(e.g. file_seed\(path\)\), got"):
            call()
    with pytest.raises(ValueError, match=r"RandomMask: seed must be an integer \(or integers\) in "
                                         r"\[0, 4294967296\), got -1"):
        f(64, seed=-1)
    for fn in (poisson_disc, variable_density):
        with pytest.raises(TypeError, match=rf"{fn.__name__}: seed must be an integer"):
            fn((32, 32), 4, seed=1.5)
    assert torch.equal(f(64, seed=np.int64(3)), f(64, seed=3))
    assert f(64, seed=file_seed("a.h5")).shape == (64,)


def _x0_problems():
    """``{"name [variant]": (y, op, params, who)}``: every method of ``recon.run`` that takes ``x0`` (bar
    ``cg_sense`` and ``l1_wavelet`` above), on a SENSE problem and on a parallel-beam sinogram."""
    from mrirecon import recon
    from mrirecon.operators import ParallelBeam
    from mrirecon.operators.ct_geometry import CTGeometry
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    ct_op = ParallelBeam(CTGeometry.parallel((32, 32), num_views=24))
    gt = torch.zeros(32, 32, dtype=torch.float64)
    gt[8:24, 8:24] = 1
    s = ct_op(gt)
    short = {"iterations": 1, "init_iterations": 1}
    cases = {"tv": (y, op, {"lam": 1e-3, "iterations": 2}, "tv"),
             "tv phase": (y, op, {"lam": 1e-3, "iterations": 2, "phase": torch.ones(32, 32)}, "tv"),
             "tgv": (y, op, {"lam": 1e-3, "iterations": 2}, "tgv"),
             "pnp_nlm": (y, op, short, "plug_and_play"),
             "dlmri": (y, op, short, "dlmri"),
             "sirt": (s, ct_op, {"iterations": 2}, "sirt"),
             "tv_ct": (s, ct_op, {"lam": 1e-3, "iterations": 2}, "tv_ct"),
             "tv_ct pdhg": (s, ct_op, {"lam": 1e-3, "iterations": 2, "method": "pdhg"}, "tv_ct"),
             "tgv ct": (s, ct_op, {"lam": 1e-3, "iterations": 2}, "tgv"),
             "dlmri ct": (s, ct_op, short, "dlmri")}
    if "pnp_bm3d" in recon.available():
        cases["pnp_bm3d"] = (y, op, short, "plug_and_play")
    return cases


def test_every_start_image_of_another_shape_is_refused():
    """x0 (2, 32, 32) for one y: tv, tgv, pnp_nlm / pnp_bm3d, dlmri, sirt, tv_ct returned 2
    images, no word; an x0 (16, 16) failed inside torch ("The size of tensor a (32) must match
    the size of tensor b (16)") or an operator; a numpy x0 with "'numpy.ndarray' object has no
    attribute 'clone'". An x0 of the image's shape still starts each of them."""
    from mrirecon import recon

    for case, (y, op, params, who) in _x0_problems().items():
        name = case.split()[0]  # "tgv ct": tgv on the sinogram
        dtype = op.H(y).dtype
        image = f"of the image of y \\({', '.join(map(str, y.shape))}\\) \\(A.H\\(y\\)\\)"
        for shape in [(2, 32, 32), (16, 16)]:
            got = ", ".join(map(str, shape))
            with pytest.raises(ValueError, match=rf"{who}: x0 must have the shape \(32, 32\) "
                                                 rf"{image}, got \({got}\)"):
                recon.run(name, y, op, x0=torch.zeros(shape, dtype=dtype), **params)
        with pytest.raises(TypeError, match=rf"{who}: x0 must be a torch.Tensor, got ndarray"):
            recon.run(name, y, op, x0=torch.zeros(32, 32, dtype=dtype).numpy(), **params)
        start = torch.randn(32, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
        out = recon.run(name, y, op, x0=start, **params)
        assert out.shape == (32, 32), case


def test_pnp_refuses_a_start_whose_noise_level_cannot_be_estimated():
    """pnp_nlm / pnp_bm3d estimate sigma from the start image: an x0 of zeros gave NaN (and
    numpy's "Mean of empty slice"), which turned the denoiser off, so the result was plain data
    consistency without a word. Refused now, naming sigma; with sigma given it runs."""
    from mrirecon import recon
    from mrirecon.recon.nonlocal_pnp import estimate_noise_level

    assert float(estimate_noise_level(torch.zeros(8, 8))) == 0.0
    y, op, params, _ = _x0_problems()["pnp_nlm"]
    zeros = torch.zeros(32, 32, dtype=op.H(y).dtype)
    with pytest.raises(ValueError, match=r"plug_and_play: the noise level cannot be estimated "
                                         r"from the start image .* give sigma"):
        recon.run("pnp_nlm", y, op, x0=zeros, **params)
    out = recon.run("pnp_nlm", y, op, x0=zeros, sigma=0.05, **params)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("kind", ["poisson_disc", "variable_density"])
def test_k_space_undersampled_with_another_2d_mask_than_the_operator_is_refused(kind):
    """y masked by one 2-D pattern, op built with another (fftshifted, transposed, another seed):
    the samples outside op's mask were dropped and its empty samples taken as measured zeros,
    cg_sense 12 / 21 / 21 dB instead of 56 at 64 x 64, no error. Fully sampled y (also with a
    zero-padded band, or zero outside an ellipse), y masked by op's own mask, and fully sampled
    y with a few samples exactly zero by chance still run."""
    from mrirecon import recon, sampling
    from mrirecon.operators import sense
    from tests.helpers import shepp_sense_problem

    _, op1, y1 = shepp_sense_problem(n=32)
    full = fft2c(op1.maps * op1.H(y1))
    gen = getattr(sampling, kind)
    m = gen((32, 32), 4.0, (8, 8), seed=0).to(torch.float64)
    op = sense(op1.maps, m)
    fraction = rf"{100 * float(m.mean()):.1f}%"
    for other in (torch.fft.fftshift(m), m.T.contiguous(), gen((32, 32), 4.0, (8, 8), seed=1)):
        with pytest.raises(ValueError, match=(
                r"cg_sense: y does not fit the operator's 2-D mask: \d+ sample\(s\) of y hold "
                rf"data that the mask drops and \d+ of the {int(m.sum())} the mask keeps hold "
                rf"none: y is sampled at \d+\.\d% of the 32 x 32 grid, the operator's mask at "
                rf"{fraction}: y was undersampled with another mask .* build op with the mask "
                r"of y")):
            recon.run("cg_sense", full * other.to(full.dtype), op, iterations=3)
    with pytest.raises(ValueError, match=r"zero_filled: y does not fit .*2-D mask \(sample 1 of 2\)"):
        recon.run("zero_filled", torch.stack([full * m, full * m.T]),
                  sense(op1.maps, torch.stack([m, m])))
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    padded, ellipse, chance = full.clone(), full * (rows**2 + cols**2 <= 1), full.clone()
    padded[..., :3] = 0
    padded[..., -2:] = 0
    r, c = m.nonzero()[-1].tolist()
    chance[:, r, c] = 0  # one kept sample exactly zero in every coil (below 1 % of them)
    for data in (full * m, full, padded, ellipse, chance):
        assert recon.run("cg_sense", data, op, iterations=3).shape == (32, 32)


def _solver_problem():
    """One SENSE slice (image (32, 32), k-space (4, 32, 32)) and its Tikhonov gram."""
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    return op, y, op.H(y), lambda v: op.gram(v) + 0.01 * v


@pytest.mark.parametrize("case, error, message", [
    ("stack", ValueError, r"cg: x0 must have the shape \(32, 32\) of rhs .*, got \(2, 32, 32\)"),
    ("numpy", TypeError, r"cg: x0 must be a torch.Tensor, got ndarray"),
    ("batch -1", ValueError, r"cg: batch_dims must be in \[0, 2\): .* rhs \(32, 32\) .*got -1"),
    ("batch 2", ValueError, r"cg: batch_dims must be in \[0, 2\): .*got 2"),
    ("batch 7", ValueError, r"cg: batch_dims must be in \[0, 2\): .*got 7"),
    ("batch 1.0", TypeError, r"cg: batch_dims must be an integer, got 1.0"),
])
def test_cg_refuses_a_start_or_batch_axes_that_do_not_fit_rhs(case, error, message):
    """rhs sets cg's shape: x0 (2, 32, 32) for a (32, 32) rhs returned two images, no word; a
    numpy x0 failed on "'numpy.ndarray' object has no attribute 'clone'"; batch_dims=-1 on
    "dim 1 appears multiple times"; batch_dims=7 (or 2: no axis left per system) was taken."""
    from mrirecon.solvers import cg

    _, _, aty, gram = _solver_problem()
    x0 = {"stack": torch.zeros(2, 32, 32, dtype=aty.dtype), "numpy": aty.numpy()}.get(case)
    batch = {"batch -1": -1, "batch 2": 2, "batch 7": 7, "batch 1.0": 1.0}.get(case, 0)
    with pytest.raises(error, match=message):
        cg(gram, aty, x0, iterations=2, batch_dims=batch)


def test_admm_and_pdhg_name_split_and_dual_starts_of_another_shape():
    """z0 / y0 of another shape than K(x0) failed on torch's "The size of tensor a (32) must
    match the size of tensor b (31)"; one y0 tensor for two blocks of K started the first block
    and dropped the second from every iteration, without a word. What stays: starts of the
    right shape run as the defaults do, one cg start for a stack of systems starts each."""
    import numpy as np

    from mrirecon.operators import FiniteDifference
    from mrirecon.solvers import admm, cg, pdhg
    from mrirecon.solvers.admm import least_squares_x_update
    from mrirecon.solvers.prox import conjugate_prox, prox_l2_squared, soft_threshold

    op, y, aty, _ = _solver_problem()
    D = FiniteDifference()
    update, prox = least_squares_x_update(op, y, D), lambda v, s: soft_threshold(v, 1e-3 * s)
    with pytest.raises(ValueError, match=r"admm: z0 must have the shape \(2, 32, 32\) of K\(x0\), "
                                         r"got \(2, 31, 32\)"):
        admm(update, prox, D, aty, 1.0, z0=torch.zeros(2, 31, 32, dtype=aty.dtype), iterations=2)
    with pytest.raises(TypeError, match=r"admm: x0 must be a torch.Tensor, got ndarray"):
        admm(update, prox, D, aty.numpy(), 1.0, iterations=2)
    pf = conjugate_prox(lambda v, s: prox_l2_squared(v, s, y))
    with pytest.raises(ValueError, match=r"pdhg: y0 must have the shape \(4, 32, 32\) of K\(x0\), "
                                         r"got \(3, 32, 32\)"):
        pdhg(op, pf, None, aty, y0=torch.zeros(3, 32, 32, dtype=aty.dtype), iterations=2)
    with pytest.raises(ValueError, match=r"pdhg: y0 has 1 start\(s\) for 2 operator blocks"):
        pdhg([op, D], [pf, pf], None, aty, y0=torch.zeros_like(y), iterations=2)
    with pytest.raises(ValueError, match=r"pdhg: y0\[1\] must have the shape \(2, 32, 32\) of "
                                         r"K\[1\]\(x0\), got \(4, 32, 32\)"):
        pdhg([op, D], [pf, pf], None, aty, y0=[torch.zeros_like(y)] * 2, iterations=2)
    # starts of K(x0)'s shape run as the defaults do
    z = admm(update, prox, D, aty, 1.0, z0=D(aty), iterations=2)
    torch.testing.assert_close(z, admm(update, prox, D, aty, 1.0, iterations=2), rtol=0, atol=0)
    p = pdhg(op, pf, None, aty, y0=torch.zeros_like(y), iterations=2)
    torch.testing.assert_close(p, pdhg(op, pf, None, aty, iterations=2), rtol=0, atol=0)
    gram, rhs = (lambda v: op.gram(v) + 0.01 * v), torch.stack([aty, 2 * aty])
    one = cg(gram, rhs, 0.5 * aty, iterations=3, batch_dims=np.int64(1))
    torch.testing.assert_close(one, cg(gram, rhs, (0.5 * aty).expand(2, 32, 32), iterations=3,
                                       batch_dims=1), rtol=0, atol=0)


def test_unknown_names_suggest_the_closest_and_stay_key_errors():
    """build_model("mdol"), recon.run("l1_wavlet") and load_pretrained("modl_brain_sm") listed
    the names without a hint (a KeyError, quoted); build_model("modl", featurs=8) said "MoDL.
    __init__() got an unexpected keyword argument 'featurs'" listing none; recon.run(lamb=1)
    listed the valid ones without a hint; None as a name gave "expected str, bytes or
    os.PathLike object, not NoneType" or "'NoneType' object has no attribute 'lower'"."""
    from mrirecon import recon
    from mrirecon.models import build_model
    from mrirecon.training.weights import load_pretrained

    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=16)
    for call, message in [(lambda: build_model("mdol"), r"^unknown model 'mdol' \(did you mean "
                                                        r"'modl'\?\); available: admm_csnet, "),
                          (lambda: recon.run("l1_wavlet", y, op), r"^unknown reconstruction "
                           r"'l1_wavlet' \(did you mean 'l1_wavelet'\?\); available: cg_sense")]:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert isinstance(err.value, KeyError)  # callers that catch KeyError still do
    with pytest.raises(FileNotFoundError, match=r"load_pretrained: no weights named 'modl_brain_sm'"
                                                r" \(did you mean 'modl_brain_sim'\?\); shipped: "):
        load_pretrained("modl_brain_sm")
    with pytest.raises(TypeError, match=r"build_model\('modl'\): did you mean 'features'\? modl "
                                        r"takes .*layers.*; got the unexpected keyword argument "
                                        r"'featurs'$"):
        build_model("modl", featurs=8)
    with pytest.raises(TypeError, match=r"cg_sense: unknown parameter\(s\) lamb; valid: lam, .*; "
                                        r"did you mean 'lam' for 'lamb'\?"):
        recon.run("cg_sense", y, op, lamb=1)
    for call, message in [(lambda: load_pretrained(None), r"load_pretrained: name_or_path must be "
                           r"a shipped weights name or a path .*got NoneType"),
                          (lambda: build_model(None), r"build_model: name must be a model name "
                                                      r"\(a str.*got NoneType"),
                          (lambda: recon.run(None, y, op), r"name must be a reconstruction name "
                                                           r"\(a str.*got NoneType")]:
        with pytest.raises(TypeError, match=message):
            call()


def test_messages_name_the_wrong_type_or_the_wrong_modality():
    """sense(numpy maps) said "maps must be a tensor (..., coils, H, W), got (4, 32, 32)" (the
    shape was right); an MRI method given a CT projector and its sinogram said "y is real ...
    has lost its phase"; fbp took a complex sinogram and returned a complex image where sirt and
    tv_ct refuse it."""
    from mrirecon import recon
    from mrirecon.operators import ParallelBeam, sense
    from mrirecon.operators.ct_geometry import CTGeometry
    from tests.helpers import shepp_sense_problem

    _, op, y = shepp_sense_problem(n=32)
    with pytest.raises(TypeError, match=r"SenseOperator: maps must be a torch.Tensor \(\.\.\., "
                                        r"coils, H, W\), got ndarray"):
        sense(op.maps.numpy(), torch.ones(1, 32))
    ct_op = ParallelBeam(CTGeometry.parallel((32, 32), num_views=24))
    s = ct_op(torch.ones(32, 32, dtype=torch.float64))
    for name in ("cg_sense", "l1_wavelet", "grappa"):
        params = {"lam": 1e-3} if name == "l1_wavelet" else {}
        with pytest.raises(TypeError, match=rf"{name}: is an MRI reconstruction, but op is a CT "
                                            r"projector \(ParallelBeam\) and y a real sinogram "
                                            r"\(24, \d+\): use a CT reconstruction"):
            recon.run(name, s, ct_op, **params)
    for name in ("fbp", "sirt"):
        with pytest.raises(TypeError, match=rf"{name}: the sinogram must be a real tensor, got "
                                            r"torch.complex128"):
            recon.run(name, s.to(torch.complex128), ct_op)
        with pytest.raises(TypeError, match=rf"{name}: is a CT reconstruction, but op is an MRI "
                                            r"operator \(SenseOperator\) and y complex k-space"):
            recon.run(name, y, op)
    with pytest.raises(TypeError, match=r"fbp: the sinogram must be a real tensor"):
        recon.fbp(s.to(torch.complex128), ct_op)
    assert not recon.run("fbp", s, ct_op).is_complex()
