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
from mrirecon.operators.tgv import SymmetrizedGradient, TGVBlock, TGVSplit
from mrirecon.recon import run, tv
from mrirecon.recon.tgv import _tgv_state, tgv, tgv_objective
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


def _tgv_u(y, op, lam, callback, *, ratio=2.0, iterations=200, nonneg=None, method="admm",
           rho=None, cg_iterations=None, preconditioned=None, step_ratio=None):
    """:func:`tgv`'s solve with a callback on the stacked ``u = (x, v)`` (for
    :func:`tgv_objective`; ``tgv``'s own callback gets the image since 2026-12-07)."""
    return _tgv_state(y, op, lam, ratio, iterations, nonneg, method, rho, cg_iterations,
                      preconditioned, step_ratio, 0.0, None, callback)


def _err(gt, x):
    return float(np.linalg.norm(np.abs(np.asarray(x)) - gt) / np.linalg.norm(gt))


def test_tgv_objective_decreases_and_beats_tv(mri_problem):
    gt, op, y = mri_problem
    objective, changes = [], []

    def record(it, u, rel):
        objective.append(float(tgv_objective(y, op, u, LAM)))
        changes.append(rel)

    # PDHG is not a descent method; with step_ratio >= 0.75 the objective decreases monotonically
    u = _tgv_u(y, op, LAM, record, iterations=ITER, method="pdhg", step_ratio=0.75)
    torch.testing.assert_close(u[..., 0, :, :], tgv(y, op, LAM, iterations=ITER, method="pdhg",
                                                    step_ratio=0.75), rtol=0, atol=0)
    v = u[..., 1:, :, :]
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
    x_tgv = tgv(y, op, LAM, ratio=1e4, iterations=200, method="pdhg", preconditioned=False)
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


# ------------------------------------------------------------------------------------------
# ADMM (method="admm") against PDHG
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", [False, True])
def test_tgv_split_operator(image, cdtype):
    """ADMM's split ``u -> (grad x - v, E v[, x])``: the TGVBlock rows stacked."""
    K = TGVSplit(image=image)
    u = random_like_shape((2, 3, 5, 6), cdtype)
    check_operator(K, u, norm=True)
    torch.testing.assert_close(K(u)[..., :2, :, :], TGVBlock("grad")(u))
    torch.testing.assert_close(K(u)[..., 2:5, :, :], TGVBlock("sym")(u))
    assert K(u).shape[-3] == (6 if image else 5)


def _u(x, v):
    return torch.cat([x.unsqueeze(-3), v], dim=-3)


def _objective(y, op, lam, **kw):
    x, v = tgv(y, op, lam, return_v=True, **kw)
    return float(tgv_objective(y, op, _u(x, v), lam))


def _small_mri(n=20):
    """4 random coils (normalised sum of squares), ~40 % of the lines, 1 % noise: complex."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, n, n, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(0, keepdim=True).sqrt()
    mask = (torch.rand(n, generator=g) < 0.3).double()
    mask[n // 2 - 3 : n // 2 + 3] = 1
    op = sense(maps, mask)
    y = op(torch.tensor(_affine_phantom(n), dtype=torch.complex128))
    return op, y + 0.01 * mask * torch.randn(y.shape, dtype=torch.complex128, generator=g), 0.01


def _small_ct(n=16, views=12):
    """Real projector; a zero-mean perturbation of the data makes x >= 0 active."""
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=views))
    y = op(torch.tensor(_affine_phantom(n), dtype=torch.float64))
    y = y - 0.5 * float(y.mean()) + 0.05 * random_like_shape(y.shape, y.dtype, 3)
    return op, y, 0.5


def _run(y, op, lam, iterations, checkpoints, nonneg, **kw):
    """Objectives at ``checkpoints`` (1-based iteration counts) of one solver run; ADMM's
    x-iterate is projected onto ``x >= 0`` first, as ``tgv`` returns it."""
    seen = {}

    def record(it, u, rel):
        if it + 1 in checkpoints:
            x = u[..., :1, :, :].clamp(min=0) if nonneg else u[..., :1, :, :]
            seen[it + 1] = float(tgv_objective(y, op, torch.cat([x, u[..., 1:, :, :]], -3), lam))

    _tgv_u(y, op, lam, record, iterations=iterations, **kw)
    return seen


@pytest.mark.parametrize("problem, rho", [(_small_mri, 1.0), (_small_ct, None)], ids=["mri", "ct"])
def test_tgv_admm_reaches_the_pdhg_minimum_and_gets_there_first(problem, rho):
    """ADMM and PDHG minimise the same objective (complex SENSE; real CT with x >= 0 active).

    Each solver's remaining error is bounded by its own last halving, ``F(N/2) - F(N)``: both
    objective errors fall at least like ``1/N`` (the ergodic rates of PDHG and ADMM), so
    ``F(N) - F* <= F(N/2) - F(N)``; the two final objectives must agree to the sum of these
    bounds. ``rho`` only changes the speed (1 suits the MRI problem's ``lam``, as measured).
    After 30 iterations ADMM with the default settings is the closer of the two."""
    op, y, lam = problem()
    nonneg = not y.is_complex()
    if nonneg:  # the constraint matters for these data
        assert float(tgv(y, op, lam, iterations=200, nonneg=False).min()) < -1e-3
    n, long_pdhg, long_admm = 30, 2000, 400
    pdhg_f = _run(y, op, lam, long_pdhg, {n, long_pdhg // 2, long_pdhg}, nonneg, method="pdhg")
    admm_f = _run(y, op, lam, long_admm, {long_admm // 2, long_admm}, nonneg, method="admm",
                  rho=rho)
    slack_pdhg = pdhg_f[long_pdhg // 2] - pdhg_f[long_pdhg]
    slack_admm = admm_f[long_admm // 2] - admm_f[long_admm]
    assert slack_pdhg >= 0 and slack_admm >= 0
    assert abs(admm_f[long_admm] - pdhg_f[long_pdhg]) <= slack_pdhg + slack_admm, (admm_f, pdhg_f)
    best = min(admm_f[long_admm] - slack_admm, pdhg_f[long_pdhg] - slack_pdhg)  # <= F*
    admm_n = _run(y, op, lam, n, {n}, nonneg)[n]  # the default: ADMM, its default rho
    assert admm_n - best < pdhg_f[n] - best, (admm_n, pdhg_f[n], best)


@pytest.mark.parametrize("problem", [_small_mri, _small_ct], ids=["mri", "ct"])
def test_tgv_admm_rho_is_relative_to_the_operator_norm(problem):
    """``A -> cA, y -> cy, lam -> c^2 lam`` scales the objective by ``c^2``: with ``rho``
    relative to ``||A||^2`` every ADMM iterate is the same image (up to float64 rounding, which
    20 iterations do not amplify past ``1e-9``)."""
    op, y, lam = problem()
    c = 37.0
    a = tgv(y, op, lam, iterations=20, method="admm")
    b = tgv(c * y, op * c, lam * c * c, iterations=20, method="admm")
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(a.abs().max()))


def test_tgv_admm_batched_equals_one_by_one():
    """Each slice of a batch gets its own CG steps and the penalty it gets alone."""
    op, y, lam = _small_ct()
    yb = torch.stack([y, 0.5 * y.flip(-1)]).float()
    xb = run("tgv", yb, op, lam=lam, iterations=30, method="admm")
    for k in range(2):
        x1 = tgv(yb[k], op, lam, iterations=30, method="admm")
        # float32: the batched reductions sum in another order; 30 iterations of rounding
        torch.testing.assert_close(xb[k], x1, rtol=0, atol=1e3 * torch.finfo(torch.float32).eps
                                   * float(x1.abs().max()))
    mop, my, mlam = _small_mri()
    myb = torch.stack([my, 2 * my])
    torch.testing.assert_close(tgv(myb, mop, mlam, iterations=10, method="admm")[1],
                               tgv(2 * my, mop, mlam, iterations=10, method="admm"))


def test_tgv_refuses_the_other_methods_settings():
    op, y, lam = _small_ct(n=8, views=6)
    with pytest.raises(ValueError, match=r"tgv: rho is a setting of method='admm', not of "
                                         r"method='pdhg' \(ADMM is the default since 2026-12-05\); "
                                         r"pass method='admm' to use it"):
        tgv(y, op, lam, iterations=2, method="pdhg", rho=0.01)
    with pytest.raises(ValueError, match=r"tgv: preconditioned, step_ratio are settings of "
                                         r"method='pdhg', not of method='admm'"):
        tgv(y, op, lam, iterations=2, preconditioned=False, step_ratio=1.0)  # ADMM by default
    with pytest.raises(ValueError, match="tgv: method must be 'admm' or 'pdhg', got 'fista'"):
        tgv(y, op, lam, iterations=2, method="fista")
    with pytest.raises(ValueError, match="tgv: rho must be > 0"):
        tgv(y, op, lam, iterations=2, method="admm", rho=0.0)
    with pytest.raises(ValueError, match="tgv: cg_iterations must be an integer >= 1"):
        tgv(y, op, lam, iterations=2, method="admm", cg_iterations=0)
    with pytest.raises(ValueError, match="tgv: step_ratio must be > 0"):
        tgv(y, op, lam, iterations=2, method="pdhg", step_ratio=0.0)
