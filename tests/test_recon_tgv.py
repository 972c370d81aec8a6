"""TGV²: operator checks of the symmetrised gradient and the PDHG blocks, dual prox maps against
brute-force minimisation, monotone objective, TGV beats TV on a piecewise-affine phantom (MRI),
CT with non-negativity and batching, registry dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mrirecon.operators import FiniteDifference, ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.tgv import SymmetrizedGradient, TGVBlock
from mrirecon.recon import run, tv
from mrirecon.recon.tgv import tgv, tgv_objective
from mrirecon.solvers import group_soft_threshold
from mrirecon.solvers.prox_extra import prox_group_l21_conjugate, prox_l2_squared_conjugate
from tests.helpers import check_operator, random_like_shape

N = 40
LAM = 0.01  # chosen once on this phantom for both TV and TGV
ITER = 100


def test_symmetrized_gradient_operator(cdtype):
    check_operator(SymmetrizedGradient(), random_like_shape((2, 2, 5, 6), cdtype), norm=True)


@pytest.mark.parametrize("kind", TGVBlock.KINDS)
def test_tgv_blocks_operator(kind, rdtype):
    check_operator(TGVBlock(kind), random_like_shape((2, 3, 5, 6), rdtype), norm=True)


def test_symmetrized_gradient_values_and_norm_bound():
    # E(grad x) of an affine image is zero away from the boundary; Frobenius storage check
    h, w = torch.meshgrid(torch.arange(8.0, dtype=torch.float64), torch.arange(9.0, dtype=torch.float64), indexing="ij")
    x = 0.3 * h - 0.7 * w + 2
    e = SymmetrizedGradient()(FiniteDifference(2)(x))
    assert torch.allclose(e[..., 1:-1, 1:-1], torch.zeros(()).double(), atol=1e-12)
    v = torch.zeros(2, 6, 6, dtype=torch.float64)
    v[0, 2, 3] = 1.0  # v_H = delta: E_HW = d_W v_H / 2 stored times sqrt(2)
    e = SymmetrizedGradient()(v)
    assert float(e[2, 2, 3]) == pytest.approx(1 / np.sqrt(2)) and float(e[0, 2, 3]) == 1.0
    norm = SymmetrizedGradient().operator_norm(random_like_shape((2, 16, 16), torch.float64),
                                               iterations=300, generator=torch.Generator().manual_seed(0))
    assert float(norm) <= np.sqrt(8) + 1e-9


def _c2r(z):
    return np.concatenate([z.real.ravel(), z.imag.ravel()])


def _r2c(r, shape):
    n = r.size // 2
    return (r[:n] + 1j * r[n:]).reshape(shape)


def test_dual_prox_maps_match_brute_force():
    rng = np.random.default_rng(0)
    shape = (2, 3)  # groups of 2 along axis 0, three groups
    p = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    data = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    s, w = 0.7, 0.9

    # conjugate of 1/2||.-y||^2: f*(q) = 1/2||q||^2 + Re<q, y>
    def obj_data(r):
        q = _r2c(r, shape)
        return s * (0.5 * np.sum(abs(q) ** 2) + np.real(np.vdot(q, data))) + 0.5 * np.sum(abs(q - p) ** 2)
    ref = _r2c(minimize(obj_data, _c2r(p), method="BFGS", options={"gtol": 1e-10}).x, shape)
    got = prox_l2_squared_conjugate(torch.tensor(p), s, torch.tensor(data)).numpy()
    assert np.allclose(got, ref, atol=1e-6)

    # the primal prox of t*w*||.||_{2,1} by brute force, and Moreau with our conjugate prox
    def obj_l21(r, v, t):
        q = _r2c(r, shape)
        return t * w * np.sum(np.sqrt(np.sum(abs(q) ** 2, axis=0))) + 0.5 * np.sum(abs(q - v) ** 2)
    t = 1 / s
    v = p / s
    ref_primal = _r2c(minimize(obj_l21, _c2r(v), args=(v, t), method="Nelder-Mead",
                               options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 40000,
                                        "maxfev": 40000}).x, shape)
    primal = group_soft_threshold(torch.tensor(v), t * w, dim=0).numpy()
    assert np.allclose(primal, ref_primal, atol=1e-4)
    dual = prox_group_l21_conjugate(torch.tensor(p), s, w, dim=0).numpy()
    assert np.allclose(dual, p - s * ref_primal, atol=1e-4)  # Moreau: p = prox_{s g*}(p) + s prox_{g/s}(p/s)
    assert np.all(np.sqrt(np.sum(abs(dual) ** 2, axis=0)) <= w + 1e-12)


def _affine_phantom(n=N):
    """Piecewise-affine image: an elliptic ramp, a tilted inner disc, zero background."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    gt = np.where((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.16, 0.3 + 0.8 * xx + 0.3 * yy, 0.0)
    return np.where((xx - 0.4) ** 2 + (yy - 0.55) ** 2 < 0.02, 1.5 - yy, gt)


@pytest.fixture(scope="module")
def mri_problem():
    gt = _affine_phantom()
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(N, generator=g) < 0.3).double()
    mask[N // 2 - 4 : N // 2 + 4] = 1
    op = sense(torch.ones(1, N, N, dtype=torch.complex128), mask)
    y = op(torch.tensor(gt, dtype=torch.complex128))
    y = y + 0.02 * mask * torch.randn(y.shape, dtype=torch.complex128, generator=g)
    return gt, op, y


def _err(gt, x):
    return float(np.linalg.norm(np.abs(np.asarray(x)) - gt) / np.linalg.norm(gt))


def test_tgv_objective_decreases_and_beats_tv(mri_problem):
    gt, op, y = mri_problem
    objective, changes = [], []

    def record(it, u, rel):
        objective.append(float(tgv_objective(y, op, u, LAM)))
        changes.append(rel)

    # PDHG is not a descent method; with step_ratio >= 0.75 the objective decreases monotonically
    x, v = tgv(y, op, LAM, iterations=ITER, step_ratio=0.75, callback=record, return_v=True)
    obj = np.array(objective)
    assert len(obj) == ITER and v.shape == (2, N, N)
    assert np.all(np.diff(obj) <= 1e-9 * obj[0]), f"objective increased by {np.diff(obj).max():.3g}"
    assert obj[-1] < 0.01 * obj[0]
    assert changes[-1] < 0.1 * max(changes[:10])
    x = tgv(y, op, LAM, iterations=ITER)  # default steps
    e_tgv, e_tv, e_zf = _err(gt, x), _err(gt, tv(y, op, LAM, iterations=60)), _err(gt, op.H(y))
    print(f"\nrelative error: zero-filled {e_zf:.4f}, TV {e_tv:.4f}, TGV {e_tgv:.4f}")
    assert e_tgv < 0.9 * e_tv < 0.5 * e_zf


def test_tgv_large_ratio_approaches_tv(mri_problem):
    # alpha0 -> inf forces E v = 0 -> v = const; with Neumann boundary that is TV's v = 0
    _gt, op, y = mri_problem
    x_tgv = tgv(y, op, LAM, ratio=1e4, iterations=200, preconditioned=False)
    x_tv = run("tv", y, op, lam=LAM, method="pdhg", iterations=200)
    assert _err(np.abs(x_tv.numpy()), x_tgv) < 0.02


def test_tgv_ct_nonneg_and_batched():
    n, views = 24, 18
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=views))
    gts = torch.stack([torch.tensor(_affine_phantom(n), dtype=torch.float32),
                       torch.tensor(_affine_phantom(n).T.copy(), dtype=torch.float32)])
    y = op(gts)
    xb = run("tgv", y, op, lam=0.05, iterations=60)
    x1 = tgv(y[1], op, 0.05, iterations=60)
    assert xb.dtype == torch.float32 and xb.shape == (2, n, n) and float(xb.min()) >= 0
    assert torch.allclose(xb[1], x1, atol=1e-5)
    fbp_err = _err(gts[0].numpy(), run("fbp", y[:1], op)[0])
    assert _err(gts[0].numpy(), xb[0]) < 0.7 * fbp_err
