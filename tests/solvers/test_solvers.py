"""Solvers: proximal maps against brute-force minimisation, FISTA/ADMM/PDHG optimality and
agreement, and the implicit-differentiation CG against autograd and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mrirecon.core import FunctionOperator
from mrirecon.operators import FiniteDifference, Identity, sense
from mrirecon.solvers import (
    admm,
    cg,
    cg_solve,
    conjugate_prox,
    fista,
    group_soft_threshold,
    least_squares_x_update,
    max_eigenvalue,
    pdhg,
    pdhg_step_sizes,
    project_box,
    project_group_l2_ball,
    project_l2_ball,
    project_nonnegative,
    prox_l2_squared,
    soft_threshold,
)
from tests.helpers import random_like_shape

# --------------------------------------------------------------------------------------------
# proximal maps vs brute force:  argmin_z  t g(z) + 1/2 ||z - v||^2
# --------------------------------------------------------------------------------------------


def _to_c(z: np.ndarray) -> np.ndarray:
    return z[: z.size // 2] + 1j * z[z.size // 2 :]


def _brute(objective, n, x0, constraints=(), bounds=None, starts=4):
    """Minimise a tiny (possibly non-smooth) objective from several starts; best result."""
    best = None
    rng = np.random.default_rng(0)
    starts = [x0] + [x0 + rng.normal(size=n) for _ in range(starts - 1)]
    for s in starts:
        if constraints or bounds:
            res = minimize(objective, s, method="SLSQP", constraints=constraints, bounds=bounds,
                           options={"ftol": 1e-14, "maxiter": 2000})
        else:  # Nelder-Mead, restarted from its own result until it stops improving
            res = None
            for _ in range(6):
                new = minimize(objective, s if res is None else res.x, method="Nelder-Mead",
                               options={"xatol": 1e-11, "fatol": 1e-15, "maxiter": 40000,
                                        "maxfev": 80000, "adaptive": True})
                if res is not None and new.fun >= res.fun - 1e-15:
                    break
                res = new
        if best is None or res.fun < best.fun:
            best = res
    return best


def test_soft_threshold_real_vs_brute_force():
    v = np.array([1.3, -0.2, 0.05, -2.0])
    t = 0.4
    out = soft_threshold(torch.tensor(v), t).numpy()
    obj = lambda z: t * np.abs(z).sum() + 0.5 * np.sum((z - v) ** 2)
    ref = _brute(obj, 4, np.zeros(4))
    assert obj(out) <= ref.fun + 1e-10
    np.testing.assert_allclose(out, ref.x, atol=1e-4)
    np.testing.assert_allclose(out, [0.9, 0.0, 0.0, -1.6], atol=1e-15)


def test_soft_threshold_complex_shrinks_modulus_vs_brute_force():
    v = np.array([1.0 + 1.0j, -0.1 + 0.2j, -0.8j])
    t = 0.5
    out = soft_threshold(torch.tensor(v), t).numpy()
    obj = lambda z: t * np.abs(_to_c(z)).sum() + 0.5 * np.sum(np.abs(_to_c(z) - v) ** 2)
    ref = _brute(obj, 6, np.zeros(6))
    zo = np.concatenate([out.real, out.imag])
    assert obj(zo) <= ref.fun + 1e-10
    np.testing.assert_allclose(out, _to_c(ref.x), atol=1e-4)
    # phase is kept, modulus shrunk by t
    assert np.isclose(np.angle(out[0]), np.angle(v[0])) and np.isclose(abs(out[0]), abs(v[0]) - t)
    assert out[1] == 0


def test_soft_threshold_tensor_threshold_and_float32():
    x = torch.tensor([[1.0, -1.0], [3.0, 0.5]], dtype=torch.float32)
    thr = torch.tensor([[0.5], [2.0]])
    out = soft_threshold(x, thr)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.5, -0.5], [1.0, 0.0]]))


@pytest.mark.parametrize("thr_shape", [(6, 1), (40,), (1, 6, 1), (3, 6, 40), (6, 2)])
def test_soft_threshold_threshold_shapes_as_broadcasting(thr_shape):
    """A threshold that widens x's shape gives the broadcast result (not in place), one that
    does not broadcast raises as torch would; both paths agree with torch.broadcast_shapes."""
    from mrirecon.core.checks import broadcasts_to

    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    thr = torch.full(thr_shape, 0.5, dtype=torch.float64)
    try:
        expected = torch.broadcast_shapes(thr_shape, x.shape)
    except RuntimeError:
        assert not broadcasts_to(thr_shape, tuple(x.shape))
        with pytest.raises(RuntimeError):
            soft_threshold(x, thr)
        return
    assert broadcasts_to(thr_shape, tuple(x.shape)) == (expected == x.shape)
    out = soft_threshold(x, thr)
    assert out.shape == expected
    torch.testing.assert_close(out, torch.sign(x) * torch.clamp(x.abs() - thr, min=0))


@pytest.mark.parametrize("threshold", [0.3, "tensor", 0.0])
def test_soft_threshold_in_place_path_equals_autograd_path(threshold):
    """Outside autograd soft thresholding runs in place on |x| (1/|x| -> inf at zeros); it is
    the same map as the differentiable form, zeros and a zero threshold included."""
    g = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(6, 40, generator=g), torch.randn(6, 40, generator=g))
    x[:, :5] = 0
    thr = torch.linspace(0.1, 1.0, 6).reshape(6, 1) if threshold == "tensor" else threshold
    fast = soft_threshold(x, thr)
    slow = soft_threshold(x.clone().requires_grad_(True), thr).detach()
    # 1 - t / |x| against max(...) of the same quantities: a few float32 roundings of |x|
    torch.testing.assert_close(fast, slow, atol=4 * torch.finfo(torch.float32).eps * float(x.abs().max()), rtol=0)
    assert torch.all(fast[:, :5] == 0) and torch.isfinite(fast).all()


def test_group_soft_threshold_vs_brute_force():
    # two groups (columns) of 2 complex entries each, grouped along dim 0 (like TV's gradient axis)
    v = np.array([[0.9 + 0.3j, 0.1 - 0.1j], [-0.4 + 0.7j, 0.05 + 0.1j]])
    t = 0.35

    def obj(z):
        zc = _to_c(z).reshape(2, 2)
        return t * np.linalg.norm(zc, axis=0).sum() + 0.5 * np.sum(np.abs(zc - v) ** 2)

    out = group_soft_threshold(torch.tensor(v), t, dim=0).numpy()
    ref = _brute(obj, 8, np.zeros(8))
    zo = np.concatenate([out.ravel().real, out.ravel().imag])
    assert obj(zo) <= ref.fun + 1e-10
    np.testing.assert_allclose(out, _to_c(ref.x).reshape(2, 2), atol=1e-4)
    assert np.all(out[:, 1] == 0)  # the small group is zeroed as a whole


def test_box_and_nonnegative_vs_constrained_minimisation():
    v = np.array([-1.5, 0.3, 2.7, 0.9])
    lo, hi = -1.0, 1.0
    ref = _brute(lambda z: 0.5 * np.sum((z - v) ** 2), 4, np.zeros(4), bounds=[(lo, hi)] * 4)
    np.testing.assert_allclose(project_box(torch.tensor(v), lo, hi).numpy(), ref.x, atol=1e-6)
    ref = _brute(lambda z: 0.5 * np.sum((z - v) ** 2), 4, np.ones(4), bounds=[(0, None)] * 4)
    np.testing.assert_allclose(project_nonnegative(torch.tensor(v)).numpy(), ref.x, atol=1e-6)
    np.testing.assert_allclose(project_box(torch.tensor(v), None, 1.0).numpy(), np.minimum(v, 1))
    with pytest.raises(TypeError, match="project_box"):
        project_box(torch.ones(2, dtype=torch.complex64), 0, 1)
    with pytest.raises(ValueError, match="lower=2"):
        project_box(torch.ones(2), 2.0, 1.0)


def test_l2_ball_vs_constrained_minimisation():
    v = np.array([0.4 + 1.0j, -2.0 + 0.5j])
    c = np.array([0.1j, 0.3])
    r = 0.8
    cons = [{"type": "ineq", "fun": lambda z: r**2 - np.sum(np.abs(_to_c(z) - c) ** 2)}]
    ref = _brute(lambda z: 0.5 * np.sum(np.abs(_to_c(z) - v) ** 2), 4,
                 np.concatenate([c.real, c.imag]), constraints=cons)
    out = project_l2_ball(torch.tensor(v), r, torch.tensor(c)).numpy()
    np.testing.assert_allclose(out, _to_c(ref.x), atol=1e-6)
    inside = torch.tensor([0.1, 0.2], dtype=torch.float64)
    assert torch.equal(project_l2_ball(inside, 1.0), inside)
    # batched: each row is its own ball
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(project_l2_ball(rows, 1.0, batch_dims=1),
                               torch.tensor([[0.6, 0.8], [0.3, 0.4]], dtype=torch.float64))


def test_group_l2_ball_vs_constrained_minimisation():
    v = np.array([[1.2, -0.1], [0.9, 0.2]])  # groups are columns
    r = 0.5
    cons = [{"type": "ineq", "fun": lambda z, j=j: r**2 - np.sum(z.reshape(2, 2)[:, j] ** 2)}
            for j in range(2)]
    ref = _brute(lambda z: 0.5 * np.sum((z.reshape(2, 2) - v) ** 2), 4, np.zeros(4),
                 constraints=cons)
    out = project_group_l2_ball(torch.tensor(v), r, dim=0).numpy()
    np.testing.assert_allclose(out, ref.x.reshape(2, 2), atol=1e-6)


def test_prox_l2_squared_and_moreau_conjugate():
    v = np.array([0.5, -1.0, 2.0])
    y = np.array([1.0, 1.0, -1.0])
    s = 0.7
    ref = minimize(lambda z: s * 0.5 * np.sum((z - y) ** 2) + 0.5 * np.sum((z - v) ** 2),
                   np.zeros(3), method="BFGS", options={"gtol": 1e-12})
    np.testing.assert_allclose(prox_l2_squared(torch.tensor(v), s, torch.tensor(y)).numpy(),
                               ref.x, atol=1e-7)
    # without data: argmin s/2 ||z||^2 + 1/2 ||z - v||^2 = v / (1 + s), to rounding
    torch.testing.assert_close(prox_l2_squared(torch.tensor(v), s), torch.tensor(v) / (1 + s),
                               rtol=4 * np.finfo(np.float64).eps, atol=0)
    # the conjugate of t||.||_1 is the indicator of the t-Linf ball: its prox is a clamp
    t = 0.6
    pc = conjugate_prox(lambda u, step: soft_threshold(u, t * step))
    w = torch.tensor([-2.0, -0.3, 0.1, 5.0], dtype=torch.float64)
    for step in (0.1, 1.0, 7.0):
        torch.testing.assert_close(pc(w, step), torch.clamp(w, -t, t))


# --------------------------------------------------------------------------------------------
# FISTA, ADMM, PDHG
# --------------------------------------------------------------------------------------------


def _lasso(m=30, n=20, seed=0, complex_=True):
    A = random_like_shape((m, n), torch.complex128 if complex_ else torch.float64, seed)
    b = random_like_shape((m,), A.dtype, seed + 1)
    L = float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    return A, b, L


def _lasso_kkt_violation(A, b, x, lam):
    """Max violation of the LASSO optimality conditions (complex L1 subdifferential)."""
    g = A.conj().T @ (A @ x - b)
    nz = x.abs() > 1e-9
    on = (g[nz] + lam * x[nz] / x[nz].abs()).abs().max() if nz.any() else torch.tensor(0.0)
    off = torch.clamp(g[~nz].abs() - lam, min=0).max() if (~nz).any() else torch.tensor(0.0)
    return float(max(on, off)), int(nz.sum())


@pytest.mark.parametrize("complex_", [True, False])
def test_fista_solves_lasso_to_kkt(complex_):
    A, b, L = _lasso(complex_=complex_)
    lam = 3.0
    x = fista(lambda x: A.conj().T @ (A @ x - b), lambda v, t: soft_threshold(v, lam * t),
              torch.zeros(20, dtype=A.dtype), 1 / L, iterations=3000, tolerance=1e-13)
    viol, nnz = _lasso_kkt_violation(A, b, x, lam)
    assert viol < 1e-6 and 0 < nnz < 20


def test_fista_beats_ista_and_restart_helps():
    A, b, L = _lasso()
    lam = 3.0
    grad = lambda x: A.conj().T @ (A @ x - b)
    prox = lambda v, t: soft_threshold(v, lam * t)
    x0 = torch.zeros(20, dtype=A.dtype)
    obj = lambda x: float(0.5 * (A @ x - b).abs().pow(2).sum() + lam * x.abs().sum())
    ref = obj(fista(grad, prox, x0, 1 / L, iterations=5000, restart=True))
    gap = {}
    for name, kw in {"ista": {"accelerate": False}, "fista": {}, "restart": {"restart": True}}.items():
        gap[name] = obj(fista(grad, prox, x0, 1 / L, iterations=150, **kw)) - ref
    assert gap["restart"] < gap["fista"] < gap["ista"]
    # tolerance stops early and the callback sees every iteration
    seen = []
    fista(grad, prox, x0, 1 / L, iterations=5000, tolerance=1e-6,
          callback=lambda it, x, rel: seen.append(rel))
    assert len(seen) < 5000 and seen[-1] <= 1e-6
    with pytest.raises(ValueError, match="step"):
        fista(grad, prox, x0, -1.0)


def test_admm_lasso_matches_fista():
    A, b, L = _lasso()
    lam = 3.0
    op = FunctionOperator(lambda x: A @ x, lambda y: A.conj().T @ y, (20,), (30,))
    K = Identity((20,))
    x0 = torch.zeros(20, dtype=A.dtype)
    x_admm = admm(least_squares_x_update(op, b, K, cg_iterations=20),
                  lambda v, t: soft_threshold(v, lam * t), K, x0, rho=L / 4,
                  iterations=400, tolerance=1e-12)
    x_fista = fista(lambda x: op.H(op(x) - b), lambda v, t: soft_threshold(v, lam * t), x0,
                    1 / L, iterations=3000, tolerance=1e-13)
    torch.testing.assert_close(x_admm, x_fista, atol=1e-6, rtol=0)


def test_admm_stops_on_a_zero_problem_beside_a_real_one(caplog):
    """A problem whose data are 0 (a blank slice of a batch): ``K x`` and ``z`` are exactly 0, so
    its relative residual has no scale and ADMM never counted it converged: every iteration
    ran and "residual 0, above its tolerance" was reported. It now stops with the other."""
    import logging

    gen = torch.Generator().manual_seed(4)
    M = torch.randn(20, 12, generator=gen, dtype=torch.float64)
    b = torch.stack([torch.randn(20, generator=gen, dtype=torch.float64), torch.zeros(20).double()])
    op = FunctionOperator(lambda v: v @ M.T, lambda r: r @ M, (12,), (20,))
    K = Identity((12,))
    caplog.set_level(logging.WARNING, "mrirecon")
    steps = []
    x = admm(least_squares_x_update(op, b, K, cg_iterations=30, batch_dims=1),
             lambda v, t: v / (1 + 0.5 * t), K, torch.zeros(2, 12, dtype=torch.float64), 1.0,
             iterations=300, tolerance=1e-8, batch_dims=1, callback=lambda i, x, r: steps.append(i))
    ridge = torch.linalg.solve(M.T @ M + 0.5 * torch.eye(12, dtype=torch.float64), M.T @ b[0])
    torch.testing.assert_close(x[0], ridge, rtol=1e-6, atol=0)
    assert float(x[1].abs().max()) == 0.0 and len(steps) < 300
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _tv_obj(x, b, lam):
    g = FiniteDifference(2)(x)
    return float(0.5 * (x - b).abs().pow(2).sum() + lam * torch.linalg.vector_norm(g, dim=-3).sum())


def test_tv_denoising_pdhg_admm_and_brute_force_agree():
    b = random_like_shape((3, 3), torch.float64, 5)
    lam = 0.4
    D = FiniteDifference(2)
    x0 = torch.zeros_like(b)
    x_pd = pdhg(D, lambda p, s: project_group_l2_ball(p, lam, dim=-3),
                lambda v, t: prox_l2_squared(v, t, b), x0, iterations=500)
    x_ad = admm(lambda v, rho, x: cg(lambda u: u + rho * D.gram(u), b + rho * D.H(v), x,
                                     iterations=9),
                lambda v, t: group_soft_threshold(v, lam * t, dim=-3), D, x0, rho=1.0,
                iterations=200)
    torch.testing.assert_close(x_pd, x_ad, atol=1e-6, rtol=0)
    bn = b.numpy()

    def obj(z):  # the same objective in numpy (fast for Nelder-Mead)
        z = z.reshape(3, 3)
        gy = np.diff(z, axis=0, append=z[-1:])
        gx = np.diff(z, axis=1, append=z[:, -1:])
        return 0.5 * np.sum((z - bn) ** 2) + lam * np.sqrt(gy**2 + gx**2).sum()

    assert abs(obj(x_pd.numpy()) - _tv_obj(x_pd, b, lam)) < 1e-12
    ref = _brute(obj, 9, bn.ravel(), starts=2)
    assert _tv_obj(x_pd, b, lam) <= ref.fun + 1e-9
    np.testing.assert_allclose(x_pd.numpy().ravel(), ref.x, atol=2e-3)


def test_pdhg_two_blocks_with_constraint_matches_reference():
    # min 1/2||A x - y||^2 + lam ||x||_1  s.t. x >= 0, as blocks [A, I] with g = x >= 0
    A, y, L = _lasso(complex_=False)
    lam = 2.0
    op = FunctionOperator(lambda x: A @ x, lambda r: A.T @ r, (20,), (30,))
    x0 = torch.zeros(20, dtype=torch.float64)
    x = pdhg([op, Identity((20,))],
             [lambda p, s: (p - s * y) / (1 + s), lambda p, s: torch.clamp(p, -lam, lam)],
             lambda v, t: project_nonnegative(v), x0, iterations=4000)
    ref = fista(lambda x: A.T @ (A @ x - y), lambda v, t: torch.clamp(v - lam * t, min=0), x0,
                1 / L, iterations=4000)
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)


def test_pdhg_step_condition():
    D = FiniteDifference(2)
    x0 = torch.zeros(8, 8, dtype=torch.float64)
    sig, tau = pdhg_step_sizes(D, x0)
    # ||D||^2 < 8 in 2-D; the chosen steps satisfy tau sigma ||D||^2 < 1 with the true norm
    true_sq = float(D.operator_norm(x0, iterations=2000, tolerance=1e-12)) ** 2
    assert 7.0 < true_sq < 8.0 and tau * sig[0] * true_sq < 1
    with pytest.raises(ValueError, match=r"FiniteDifference.*tau <= "):
        pdhg(D, lambda p, s: p, None, x0, sigma=1.0, tau=1.0, iterations=1)
    with pytest.raises(ValueError, match="2 prox_f_conj for 1"):
        pdhg(D, [lambda p, s: p] * 2, None, x0)


def test_max_eigenvalue_per_batch_item_matches_dense_eigenvalues():
    mats = torch.stack([_hpd_matrix(6, s) for s in range(3)])  # (3, 6, 6)
    est = max_eigenvalue(lambda x: (mats @ x.unsqueeze(-1)).squeeze(-1),
                         torch.zeros(3, 6, dtype=torch.complex128), batch_dims=1,
                         iterations=500, tolerance=1e-12)
    ref = torch.linalg.eigvalsh(mats)[:, -1]
    assert est.shape == (3, 1)
    torch.testing.assert_close(est[:, 0], ref, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# implicit differentiation through CG
# --------------------------------------------------------------------------------------------


def _hpd_matrix(n, seed):
    B = random_like_shape((n, n), torch.complex128, seed)
    return B.conj().T @ B / n


def test_cg_solve_gradcheck_rhs_lam_and_gram_parameter():
    n = 5
    M = random_like_shape((n, n), torch.complex128, 3).requires_grad_(True)
    rhs = random_like_shape((n,), torch.complex128, 4).requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(rhs, lam, M):
        gram = lambda x: M.conj().T @ (M @ x)
        return cg_solve(gram, rhs, lam, params=(M,), iterations=60, tolerance=1e-14)

    assert torch.autograd.gradcheck(f, (rhs, lam, M), eps=1e-6, atol=1e-6)


def test_cg_solve_second_derivatives_match_finite_differences_of_its_gradient():
    """create_graph=True (Hessian-vector products, gradient penalties, MAML): the backward was
    once_differentiable, and ``torch.autograd.grad`` through it gave wrong second derivatives
    with no error (MoDL's default implicit DC: 86 % off); only ``.backward()`` raised. Exact
    solves (n = 5, 60 CG iterations, float64) leave only finite-difference error."""
    n = 5
    M = random_like_shape((n, n), torch.complex128, 3)
    rhs = random_like_shape((n,), torch.complex128, 4).requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(rhs, lam):
        gram = lambda x: M.conj().T @ (M @ x)
        return cg_solve(gram, rhs, lam, iterations=60, tolerance=1e-14)

    assert torch.autograd.gradgradcheck(f, (rhs, lam), eps=1e-6, atol=1e-6)


def test_second_derivatives_for_tensors_inside_the_operator_are_refused_not_wrong():
    """What the implicit backward cannot differentiate again (the operator's own tensors, listed
    or found by the tracking solve) is refused naming implicit=False, which differentiates."""
    from mrirecon.models.blocks.cg_dc import solve_proximal

    n = 5
    M = random_like_shape((n, n), torch.complex128, 3).requires_grad_(True)
    rhs = random_like_shape((n,), torch.complex128, 4).requires_grad_(True)
    gram = lambda x: M.conj().T @ (M @ x)
    for params in ((M,), None):
        x = solve_proximal(gram, rhs, 0.7, iterations=60, params=params)
        (g,) = torch.autograd.grad(x.abs().square().sum(), M, create_graph=False)
        x = solve_proximal(gram, rhs, 0.7, iterations=60, params=params)
        with pytest.raises(RuntimeError, match=r"second derivatives .*implicit=False"):
            torch.autograd.grad(x.abs().square().sum(), M, create_graph=True)
    x = solve_proximal(gram, rhs, 0.7, iterations=60, implicit=False)
    (g_unrolled,) = torch.autograd.grad(x.abs().square().sum(), M, create_graph=True)
    torch.testing.assert_close(g_unrolled.detach(), g, atol=1e-10, rtol=1e-8)


def test_cg_solve_matches_autograd_through_unrolled_cg_on_sense():
    g = torch.Generator().manual_seed(0)
    maps = random_like_shape((2, 4, 8, 8), torch.complex128, 1) / 3
    maps.requires_grad_(True)
    mask = (torch.rand(8, generator=g) < 0.5).double()
    target = random_like_shape((2, 8, 8), torch.complex128, 2)
    rhs0 = random_like_shape((2, 8, 8), torch.complex128, 3)
    lam0 = torch.tensor([[[0.3]], [[0.6]]], dtype=torch.float64)  # one lambda per slice

    def loss(solver):
        rhs = rhs0.clone().requires_grad_(True)
        lam = lam0.clone().requires_grad_(True)
        op = sense(maps, mask)
        x = solver(op.gram, rhs, lam)
        val = (x - target).abs().pow(2).sum()
        return torch.autograd.grad(val, (rhs, lam, maps)), x

    def unrolled(gram, rhs, lam):
        return cg(lambda v: gram(v) + lam * v, rhs, iterations=150, batch_dims=1)

    def implicit(gram, rhs, lam):
        return cg_solve(gram, rhs, lam, params=(maps,), iterations=150, batch_dims=1)

    (g_ref, x_ref), (g_imp, x_imp) = loss(unrolled), loss(implicit)
    torch.testing.assert_close(x_imp, x_ref, atol=1e-10, rtol=0)
    for a, b, name in zip(g_imp, g_ref, ("rhs", "lam", "maps")):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8, msg=name)


def test_cg_solve_saves_no_iterations():
    n = 64
    A = _hpd_matrix(n, 0)
    calls = {"n": 0}

    def gram(x):
        calls["n"] += 1
        return A @ x

    rhs = random_like_shape((n,), torch.complex128, 1).requires_grad_(True)
    x = cg_solve(gram, rhs, 0.5, iterations=40)
    forward_calls = calls["n"]
    assert x.grad_fn is not None and forward_calls == 40
    x.abs().sum().backward()
    assert calls["n"] == 2 * forward_calls  # backward = one more CG solve, nothing stored
    with pytest.raises(TypeError, match="lam must be real"):
        cg_solve(gram, rhs, torch.tensor(1j))


def test_cg_dot_on_real_views_equals_the_complex_inner_product():
    """CG's ``Re <a, b>`` sums the real views (one product pass); it equals the complex formula
    for a batch axis, for all axes and for lazily conjugated inputs."""
    from mrirecon.solvers.cg import _dot

    a = random_like_shape((3, 5, 7), torch.complex128, 1)
    b = random_like_shape((3, 5, 7), torch.complex128, 2)
    want = (a.conj() * b).real.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(_dot(a, b, (1, 2)), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(_dot(a, b, None), want.sum(), atol=1e-12, rtol=0)
    torch.testing.assert_close(_dot(a, b, (-2, -1)), want, atol=1e-12, rtol=0)  # negative axes: the complex ones
    torch.testing.assert_close(_dot(a.conj(), b, (1, 2)), (a * b).real.sum(dim=(1, 2), keepdim=True),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(_dot(a, b, ()), (a.conj() * b).real.sum(dim=(), keepdim=True))  # torch: all
    real = a.real.contiguous()
    torch.testing.assert_close(_dot(real, real, (1, 2)), real.square().sum(dim=(1, 2), keepdim=True))


def _spd(n=120, cond=1e4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    lam = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return (q * lam) @ q.T, torch.randn(n, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("tolerance", [1e-2, 1e-4, 1e-6])
def test_cg_tolerance_is_on_the_relative_residual_norm(tolerance):
    """cg stops when ||r|| <= tolerance ||b||: the residual it returns meets the tolerance
    (guards against ``tolerance**2 -> tolerance`` in the threshold, which stopped at
    sqrt(tolerance)) and it does not run to the iteration limit once it does."""
    from mrirecon.solvers.cg import cg

    a, b = _spd()
    seen = []
    x = cg(lambda v: a @ v, b, iterations=10_000, tolerance=tolerance,
           callback=lambda it, x, rn: seen.append(it))
    rel = float(torch.linalg.vector_norm(b - a @ x) / torch.linalg.vector_norm(b))
    # the recurrence residual and the true one differ by rounding: cond * eps
    assert rel <= tolerance * (1 + 1e-6) + 1e4 * 100 * torch.finfo(torch.float64).eps
    assert len(seen) < 10_000


def test_cg_solve_batched_gradients_are_each_systems_own():
    """With batch_dims=1 every system is solved on its own, forward and backward: with a
    truncated CG (3 iterations, not converged) the gradients of a batch equal those of each
    system solved alone; a backward CG over the whole batch mixes their step sizes."""
    from mrirecon.solvers import cg_solve

    g = torch.Generator().manual_seed(0)
    diag = torch.stack([torch.linspace(1, 50, 8, dtype=torch.float64),
                        torch.linspace(0.1, 3, 8, dtype=torch.float64) ** 2])  # (2, 8)
    rhs = torch.randn(2, 8, dtype=torch.float64, generator=g)
    w = torch.randn(2, 8, dtype=torch.float64, generator=g)

    def solve(d, b, weight, batch_dims):
        b = b.clone().requires_grad_(True)
        x = cg_solve(lambda v: d * v, b, 0.0, iterations=3, batch_dims=batch_dims)
        (gb,) = torch.autograd.grad((weight * x).sum(), b)
        return x.detach(), gb

    xb, gb = solve(diag, rhs, w, 1)
    tol = 1e3 * torch.finfo(torch.float64).eps  # same arithmetic, up to reduction order
    for i in range(2):
        xi, gi = solve(diag[i], rhs[i], w[i], 0)
        torch.testing.assert_close(xb[i], xi, rtol=tol, atol=tol)
        torch.testing.assert_close(gb[i], gi, rtol=tol, atol=tol)
