"""Density-weighted data consistency for non-Cartesian models (``density_weighted``)."""

import pytest
import torch

from mrirecon.functional.density import cached_pipe_menon_density, pipe_menon_density
from mrirecon.models.registry import build_model, model_modality
from mrirecon.models.unrolled.density_weighted import density_weighted
from mrirecon.operators import nufft_sense, sense
from mrirecon.sampling import golden_angle_radial
from tests.helpers import check_adjoint
from tests.models.problems import radial_problem

N, COILS, SPOKES = 32, 4, 24
EPS32 = torch.finfo(torch.float32).eps
MODL = dict(iterations=2, layers=3, features=8, cg_iterations=4, batchnorm=False)


def _problem(batch=1):
    target, maps, traj = radial_problem(N, COILS, SPOKES, batch, normalise=True)
    op = nufft_sense(maps, traj)
    return op(target), op, target


def test_weighted_operator_is_the_weighted_data_model():
    """``(W^(1/2) y, W^(1/2) N S)`` with the trajectory's Pipe-Menon weights: the weighted data
    are the weighted operator applied to the image, and the operator passes the dot test."""
    y, op, target = _problem()
    y_w, op_w = density_weighted(y, op)
    w = pipe_menon_density(op.trajectory, (N, N))
    assert torch.allclose(op_w.weights.double(), w, rtol=EPS32, atol=0)
    # same NUFFT of the same image, then one multiplication by sqrt(w) each
    err = (op_w(target) - y_w).abs().max() / y_w.abs().max()
    assert float(err) <= 16 * EPS32
    x = torch.randn(1, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    check_adjoint(op_w, x, tol=1e-5)


def test_weighting_equalises_the_gram():
    """Why the weighting: with it the gram is close to the identity at every sampled frequency
    (Rayleigh quotient near 1 for a smooth and for a detailed image); without it the centre's
    oversampling makes the quotients differ by an order of magnitude (CG then needs many more
    steps than an unrolled model gives it)."""
    _, op, _ = _problem()
    _, op_w = density_weighted(torch.zeros(1, COILS, SPOKES, 2 * N, dtype=torch.complex64), op)
    yy, xx = torch.meshgrid(torch.arange(N), torch.arange(N), indexing="ij")
    window = torch.exp(-(((yy - N / 2) ** 2 + (xx - N / 2) ** 2) / (N / 4) ** 2))
    smooth = window.to(torch.complex64)[None]
    detail = (window * torch.exp(2j * torch.pi * (10 * xx / N))).to(torch.complex64)[None]

    def quotient(a, x):
        return float(torch.vdot(x.flatten(), a.gram(x).flatten()).real / x.abs().pow(2).sum())

    plain = quotient(op, smooth) / quotient(op, detail)
    weighted = quotient(op_w, smooth) / quotient(op_w, detail)
    assert plain > 8.0  # 0 vs 10 cycles/FOV: the ramp of a radial trajectory (12x here)
    assert 0.9 < weighted < 1.1  # 1.04 here


def test_model_runs_the_inner_model_on_weighted_data():
    y, op, _ = _problem()
    model = build_model("density_weighted", model="modl", model_params=MODL, init_seed=0).eval()
    inner = build_model("modl", **MODL, init_seed=0).eval()
    inner.load_state_dict({k.removeprefix("model."): v for k, v in model.state_dict().items()})
    y_w, op_w = density_weighted(y, op)
    with torch.no_grad():
        a, b = model(y, op), inner(y_w, op_w)
    assert torch.equal(a, b)
    assert model_modality(model) == "mri"


def test_weighted_operator_is_taken_as_given():
    y, op, _ = _problem()
    w = torch.rand(op.kshape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    given = nufft_sense(op.maps, op.trajectory, w)
    y2, op2 = density_weighted(y, given)
    assert y2 is y and op2 is given


def test_model_is_scale_equivariant():
    """MoDL normalises its input, and the weighting is linear: data x 10^3 give the image x 10^3."""
    y, op, _ = _problem()
    model = build_model("density_weighted", model="modl", model_params=MODL, init_seed=0).eval()
    with torch.no_grad():
        a, b = model(y, op), model(1e3 * y, op) / 1e3
    # float32 rounding through a few CG steps and a small CNN, relative to the image
    assert float((a - b).abs().max() / a.abs().max()) <= 1e3 * EPS32


def test_cartesian_operator_is_refused():
    model = build_model("density_weighted", model="modl", model_params=MODL)
    op = sense(torch.ones(1, 2, 8, 8, dtype=torch.complex64), torch.ones(8, dtype=torch.bool))
    with pytest.raises(TypeError, match="nufft_sense operator"):
        model(torch.zeros(1, 2, 8, 8, dtype=torch.complex64), op)
    with pytest.raises(ValueError, match="cannot be density_weighted again"):
        build_model("density_weighted", model="density_weighted")


def test_density_cache_follows_the_trajectory_tensor():
    traj = golden_angle_radial(SPOKES, 2 * N)
    first = cached_pipe_menon_density(traj, (N, N))
    assert cached_pipe_menon_density(traj, (N, N)) is first
    assert cached_pipe_menon_density(traj, (N + 2, N + 2)) is not first  # another grid
    traj.mul_(0.5)  # edited in place: the cached weights no longer describe it
    again = cached_pipe_menon_density(traj, (N, N))
    assert again is not first
    assert torch.allclose(again, pipe_menon_density(traj, (N, N)))


def test_pipeline_calibrates_only_for_a_model_on_given_maps():
    """A wrapped learned-maps model estimates its own maps: the pipeline skips ``calibrate`` for
    it, as for ``learned_maps`` itself; a wrapped MoDL needs the calibrated maps."""
    from mrirecon.pipeline.stages_mri import needs_maps

    on_maps = build_model("density_weighted", model="modl", model_params=MODL)
    own = build_model("density_weighted", model="learned_maps",
                      model_params=dict(model="modl", model_params=MODL, sens_chans=4, calib_width=12))
    assert on_maps.sensitivity is None and own.sensitivity is own.model.sensitivity
    assert needs_maps("density_weighted", on_maps) and not needs_maps("density_weighted", own)
