"""Hostile cases of the learned-models audit: data at 1e-30 / 1e30 through the models whose scale
kept a 1e-12 floor (DPIR, the staged CT net, the FBP-started primal-dual) or whose CG / coil-map
statistics under- or overflowed float32, all-zero samples, gradients w.r.t. the data through the
per-sample scale, float64 scales, and operators moved with ``op.to(dtype)``.

Tiny random models from the registry: these are properties of the maths, not of trained weights.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from mrirecon.data.simulate_ct import ct_simulation_geometry
from mrirecon.models import build_model
from mrirecon.models.pnp.dpir import robust_scale
from mrirecon.operators import nufft_sense, sense
from tests.models.problems import ct_phantom_mu, radial_problem, sparse_ct_data

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps
N = 16
MODELS = ("pnp_dpir", "staged_ct", "primal_dual_fbp", "learned_maps", "modl")


def _mri(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, N, N, dtype=torch.complex128, generator=g)
    maps = torch.randn(1, 3, N, N, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(N, dtype=torch.bool)
    mask[::2] = True
    mask[N // 2 - 2:N // 2 + 2] = True
    op = sense(maps.to(dtype), mask)
    return op(x.to(dtype)), op


def _ct(dtype: torch.dtype):
    geometry = ct_simulation_geometry("parallel", N, 24, None, 30.0)
    return sparse_ct_data(ct_phantom_mu(N, 0), geometry, 2, 1, dtype)


def _radial(dtype: torch.dtype):
    target, maps, traj = radial_problem(N, 3, 8)
    y = nufft_sense(maps, traj)(target).to(dtype)
    op = nufft_sense(torch.full((1, 3, N, N), 3**-0.5, dtype=dtype), traj)
    return y, op


def _case(name: str, dtype: torch.dtype):
    """(model, y, op) in ``dtype`` (complex for MRI; CT data are real of its precision)."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    if name == "pnp_dpir":
        m = build_model("pnp_dpir", iterations=3, sigma_max=0.1, sigma_min=0.05, lam=0.01,
                        cg_iterations=20, init_rho=1.0, init_iterations=20, depth=3, features=4,
                        init_seed=0)
        y, op = _mri(dtype)
    elif name == "staged_ct":
        m = build_model("staged_ct", iterations=1, chans=2, num_pools=1, lam=[0.3], lam0=0.003,
                        cg_iterations=5, init_seed=0)
        y, op = _ct(real)
    elif name == "primal_dual_fbp":
        m = build_model("primal_dual", iterations=2, n_primal=2, n_dual=1, features=4,
                        fbp_start=True, init_seed=0)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # the zero-initialised last layers would make it the FBP
            for it in m.iterations:
                last = it.primal[-1].weight
                last.copy_(0.05 * torch.randn(last.shape, generator=g))
        y, op = _ct(real)
    elif name == "unrolled_em":
        m = build_model("unrolled_em", iterations=2, components=2, patch_size=4, stride=2,
                        cg_iterations=8, implicit=False, init_seed=0)
        y, op = _mri(dtype)
    elif name == "learned_maps":
        m = build_model("learned_maps", model="modl",
                        model_params=dict(iterations=2, layers=3, features=4, cg_iterations=4,
                                          batchnorm=False, implicit=False),
                        sens_chans=2, sens_pools=1, calib_width=8, init_seed=0)
        with torch.no_grad():
            m.sensitivity.gate.fill_(0.5)
        y, op = _radial(dtype)
    else:
        m = build_model("modl", iterations=2, layers=3, features=4, batchnorm=False,
                        cg_iterations=4, implicit=False, init_seed=0)
        y, op = _mri(dtype)
    return m.to(real).eval(), y, op


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", MODELS[:4])
def test_float32_output_follows_the_data_from_1e_minus_30_to_1e30(name):
    # Was: the scale's 1e-12 floor froze DPIR / staged CT / primal-dual below it (13 at c=1e-12,
    # 1e9 at 1e-20 for the shipped models); CG's <r, r> underflowed (1e-30) or overflowed (1e30)
    # in DPIR's start and the staged net's data consistency; the learned maps were all zero
    # below 1e-17 (an image of zeros) and refused above 1e20
    m, y, op = _case(name, torch.complex64)
    with torch.no_grad():
        x = m(y, op)
        for c in (1e-30, 1e30):
            # c y is rounded once per sample; the networks amplify that (c = 3 gives the same)
            assert _rel(m(c * y, op) / c, x) <= 1e3 * EPS32, c
        for k in (-100, 100):  # a power of two rescales every float exactly
            # scaled back by a product: torch 2.4-2.6 divide a complex tensor by a real scalar
            # as by a complex number, which rounds (1 ulp on 101 of 256 DPIR pixels)
            assert torch.equal(m(2.0**k * y, op) * 2.0**-k, x), k


@pytest.mark.parametrize("name", [n for n in MODELS if n != "learned_maps"])  # maps of 0: refused
def test_an_all_zero_sample_gives_zeros_and_leaves_the_others(name):
    # Was: the scale of an all-zero sample was 1 (or the 1e-12 floor), and a network with
    # biases or a noise-level input made an image of its own: 0.15 from modl_brain_sim (images
    # peak at 1e-3), ~1e-14 from DPIR / staged CT / primal-dual
    m, y, op = _case(name, torch.complex128)
    with torch.no_grad():
        alone = m(y, op)
        if op.__class__.__name__ == "SenseOperator":
            op2 = sense(torch.cat([op.maps, op.maps]), op.mask)
        else:
            op2 = op
        both = m(torch.cat([torch.zeros_like(y), y]), op2)
    assert torch.equal(both[0], torch.zeros_like(both[0]))
    assert _rel(both[1], alone[0]) <= 1e3 * EPS64


@pytest.mark.parametrize("name", MODELS + ("unrolled_em",))
def test_gradient_wrt_the_data_is_that_of_the_computed_map(name):
    # Was: the per-sample scale s was detached, so autograd differentiated s f(y / s) as if s
    # were a constant: 0.9 % (MoDL), 20 % (primal-dual), 5 % (staged CT) off for the shipped
    # models; the learned maps' scale also depends on y through the maps; the unrolled EM
    # network's scale and start (gmm.normalise_problem) ran under no_grad and its unrolled
    # (implicit=False) CG started from a detached warm start: 6.9e-2 off
    m, y, op = _case(name, torch.complex128)
    with torch.no_grad():
        out = m(y, op)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(out.shape, dtype=out.dtype, generator=g)
    dy = torch.randn(y.shape, dtype=y.dtype, generator=g) * y.abs().mean()
    if name in ("pnp_dpir", "modl", "unrolled_em"):
        dy = dy * op.mask  # a direction on the sampled columns
    inner = lambda a, b: float((a.conj() * b).real.sum())  # noqa: E731

    def loss(v):
        o = m(v, op)
        return (o.conj() * w).real.sum() if o.is_complex() else (o * w).sum()

    v = y.clone().requires_grad_()
    loss(v).backward()
    # along y itself: the models are positively homogeneous, so the derivative is the output
    # (Euler), exactly; the detached scale missed it by 1.7e-2 (DPIR) .. 12 (staged CT) of it
    assert abs(inner(v.grad, y) - inner(w, out)) <= 1e2 * EPS64 * float(out.norm() * w.norm())
    # along a random direction: central differences (h^2 truncation, eps / h rounding)
    h = 1e-6
    with torch.no_grad():
        fd = float((loss(y + h * dy) - loss(y - h * dy)) / (2 * h))
    assert abs(inner(v.grad, dy) - fd) <= 10 * EPS64**0.5 * abs(fd)


def test_dpir_scale_of_float64_data_is_not_rounded_to_float32():
    # Was: |x| was cast to float32 before the quantile: the scale of float64 data 3e-7..9e-7 off
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 10, dtype=torch.complex128, generator=g) / 3
    ref = torch.quantile(x.abs().reshape(2, -1), 0.995, dim=1).reshape(2, 1, 1)
    assert robust_scale(x).dtype == torch.float64
    assert torch.equal(robust_scale(x), ref)


def test_nufft_operator_moved_to_complex128_keeps_a_real_trajectory():
    # Was: op.to(torch.complex128) made the trajectory, weights and Toeplitz kernel complex and
    # A x failed with "nufft: trajectory must be real"
    target, maps, traj = radial_problem(N, 3, 8)
    w = torch.rand(traj.shape[:-1], generator=torch.Generator().manual_seed(0)) + 0.5
    op = nufft_sense(maps, traj, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "Complex modules are a new feature"
        moved = copy.deepcopy(op).to(torch.complex128)
    kinds = {k: v.dtype for k, v in moved.named_buffers()}
    assert kinds == {"maps": torch.complex128, "trajectory": torch.float64,
                     "weights": torch.float64, "_sqrt_weights": torch.float64,
                     "kernel": torch.float64}
    # the operator built in complex128 from the buffers as stored (float32): the same to the
    # rounding of those buffers (the square-rooted weights)
    fresh = nufft_sense(maps.to(torch.complex128), op.trajectory.to(torch.float64),
                        op.weights.to(torch.float64))
    x = target.to(torch.complex128)
    yk = fresh(x)
    for f, v in (("forward", x), ("adjoint", yk), ("gram", x)):
        assert _rel(getattr(moved, f)(v), getattr(fresh, f)(v)) <= 10 * EPS32, f


def test_sense_operator_moved_to_float64_keeps_complex_maps():
    # Was: op.to(torch.float64) dropped the maps' imaginary part: A x 65 % off, with only
    # torch's "Casting complex values to real discards the imaginary part"
    y, op = _mri(torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = copy.deepcopy(op).to(torch.float64)
    assert moved.maps.dtype == torch.complex128
    x = torch.randn(1, N, N, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    assert torch.equal(moved(x), sense(op.maps.to(torch.complex128), op.mask)(x))
