"""CT reconstructions: SIRT and TV-PDHG beat FBP on sparse-view Shepp-Logan; SIRT's weighted
residual decreases; both TV step rules reach the same minimum; registry dispatch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from mrirecon.metrics import psnr
from mrirecon.operators import ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.recon import fbp, run, sirt, tv_ct, tv_objective, tv_pdhg
from mrirecon.recon.variational import GradientAndImage
from tests.helpers import random_like_shape

N = 128
VIEWS = 60
LAM_TV = 1.0  # chosen once on this phantom
ITER_SIRT = 150
ITER_TV = 100


@pytest.fixture(scope="module")
def sparse_view():
    gt = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)
    op = ParallelBeam(CTGeometry.parallel((N, N), num_views=VIEWS))
    y = op(torch.tensor(gt, dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    y = y + 0.01 * float(y.max()) * torch.randn(y.shape, generator=g)  # 1 % noise
    return gt, op, y


def _psnr(gt, x):
    return float(psnr(gt[None], np.asarray(x)[None]))


def test_sirt_and_tv_beat_fbp_with_sparse_views(sparse_view):
    gt, op, y = sparse_view
    p_fbp = _psnr(gt, fbp(y, op))
    x_sirt = sirt(y, op, ITER_SIRT)
    x_tv = tv_pdhg(y, op, LAM_TV, ITER_TV)
    p_sirt, p_tv = _psnr(gt, x_sirt), _psnr(gt, x_tv)
    print(f"\n{VIEWS} views PSNR: fbp {p_fbp:.2f}, sirt {p_sirt:.2f}, tv {p_tv:.2f} dB")
    assert p_sirt > p_fbp + 1.0
    assert p_tv > p_sirt + 2.0
    assert float(x_sirt.min()) >= 0 and float(x_tv.min()) >= 0  # non-negativity holds
    assert x_tv.dtype == torch.float32 and x_tv.shape == (N, N)


def _small_ct(n=24, views=20):
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=views))
    x = torch.rand((n, n), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return op, x, op(x)


def test_sirt_decreases_weighted_residual_and_batches():
    op, _x, y = _small_ct()
    row = op(torch.ones(24, 24, dtype=torch.float64))
    R = torch.where(row > 0, 1.0 / row.clamp(min=1e-300), 0.0)  # rays that miss the image: 0
    res = []
    sirt(y, op, 30, nonneg=False,
         callback=lambda it, xi, rel: res.append(float((R * (y - op(xi)) ** 2).sum())))
    assert len(res) == 30
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(res))  # monotone (SIRT theory)
    assert res[-1] < 0.15 * res[0]
    # batched slices equal single-slice runs
    yb = torch.stack([y, 2 * y])
    xb = sirt(yb, op, 5)
    torch.testing.assert_close(xb[1], sirt(2 * y, op, 5))
    with pytest.raises(ValueError, match=r"relaxation must lie in \(0, 2\)"):
        sirt(y, op, 1, relaxation=2.5)
    with pytest.raises(TypeError, match="sirt: the sinogram must be a real tensor"):
        sirt(y.to(torch.complex128), op, 1)


def test_tv_pdhg_preconditioned_and_scalar_steps_reach_same_minimum():
    op, _x, y = _small_ct(n=16, views=12)
    y = y + 0.05 * random_like_shape(y.shape, y.dtype, 3)
    lam = 0.5
    a = tv_pdhg(y, op, lam, 800)
    b = tv_pdhg(y, op, lam, 800, preconditioned=False)
    fa, fb = float(tv_objective(y, op, a, lam)), float(tv_objective(y, op, b, lam))
    assert abs(fa - fb) <= 2e-5 * fa
    assert float(a.min()) >= 0
    # a constrained minimum: non-negative perturbations cannot lower the objective
    for seed in range(3):
        d = 1e-3 * torch.rand(a.shape, generator=torch.Generator().manual_seed(seed), dtype=a.dtype)
        assert float(tv_objective(y, op, a + d, lam)) > fa * (1 - 1e-5)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tv_pdhg(y, op, -1.0)


def test_gradient_and_image_adjoint():
    """The ADMM split of TV with x >= 0: K x = (D_row x, D_col x, x), K^H K = D^H D + I."""
    K = GradientAndImage()
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 9, 7), generator=g, dtype=torch.float64)
    v = torch.randn((2, 3, 9, 7), generator=g, dtype=torch.float64)
    lhs, rhs = torch.sum(K(x) * v), torch.sum(x * K.H(v))
    assert abs(float(lhs - rhs)) <= 1e-12 * float(torch.linalg.vector_norm(K(x)) * torch.linalg.vector_norm(v))
    torch.testing.assert_close(K.gram(x), K.H(K(x)))
    torch.testing.assert_close(K(x)[:, 2], x)


def test_tv_ct_admm_reaches_the_pdhg_minimum_with_x_nonnegative():
    """ADMM (default) and PDHG minimise the same constrained objective; ADMM's iterate is
    returned projected onto x >= 0. A zero-mean perturbation of the data makes the constraint
    active (the unconstrained minimum has negative pixels)."""
    op, _x, y = _small_ct(n=16, views=12)
    y = y - 0.6 * float(y.mean()) + 0.05 * random_like_shape(y.shape, y.dtype, 3)
    lam = 0.5
    ref = tv_pdhg(y, op, lam, 1000)  # converged: 3000 iterations change the objective by 1e-7
    free = tv_ct(y, op, lam, 200, nonneg=False)
    assert float(free.min()) < -1e-3  # the constraint matters for these data
    a = tv_ct(y, op, lam, 200, cg_iterations=5)
    fa, fr = float(tv_objective(y, op, a, lam)), float(tv_objective(y, op, ref, lam))
    assert float(a.min()) >= 0 and abs(fa - fr) <= 1e-4 * fr
    # the default settings get closer in 100 iterations than PDHG does
    f100 = float(tv_objective(y, op, tv_ct(y, op, lam, 100), lam))
    f_pdhg100 = float(tv_objective(y, op, tv_pdhg(y, op, lam, 100), lam))
    assert f100 - fr < 0.5 * (f_pdhg100 - fr)


def test_tv_ct_rho_is_relative_to_the_projector_norm():
    """Scaling A and y by c and lam by c^2 scales the objective by c^2: with rho relative to
    ||A||^2 every ADMM iterate is the same image."""
    op, _x, y = _small_ct(n=16, views=12)
    c = 37.0
    a = tv_ct(y, op, 0.5, 20)
    b = tv_ct(c * y, op * c, 0.5 * c * c, 20)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(a.abs().max()))


def test_tv_ct_refuses_the_other_methods_settings():
    op, _x, y = _small_ct(n=8, views=6)
    with pytest.raises(ValueError, match=r"tv_ct: rho is a setting of method='admm', not of "
                                         r"method='pdhg' .*; pass method='admm' to use it"):
        tv_ct(y, op, 1.0, 2, method="pdhg", rho=0.01)
    with pytest.raises(ValueError, match=r"tv_ct: preconditioned is a setting of method='pdhg', not of "
                                         r"method='admm' \(ADMM is the default since 2026-12-05\); "
                                         r"pass method='pdhg' to use it"):
        tv_ct(y, op, 1.0, 2, preconditioned=False)
    torch.testing.assert_close(tv_ct(y, op, 1.0, 5, method="pdhg", preconditioned=False),
                               tv_pdhg(y, op, 1.0, 5, preconditioned=False))
    with pytest.raises(ValueError, match="tv_ct: method must be 'admm' or 'pdhg', got 'fista'"):
        tv_ct(y, op, 1.0, 2, method="fista")
    with pytest.raises(ValueError, match="tv_ct: rho must be > 0"):
        tv_ct(y, op, 1.0, 2, rho=0.0)
    with pytest.raises(ValueError, match="tv_ct: cg_iterations must be an integer >= 1"):
        tv_ct(y, op, 1.0, 2, cg_iterations=0)


def test_registry_ct_entries_match_direct_calls(sparse_view):
    _gt, op, y = sparse_view
    torch.testing.assert_close(run("fbp", y, op, filter="hann"), fbp(y, op, filter="hann"))
    torch.testing.assert_close(run("sirt", y, op, iterations=3), sirt(y, op, 3))
    torch.testing.assert_close(run("tv_ct", y, op, lam=1.0, iterations=3),
                               tv_ct(y, op, 1.0, 3))
    torch.testing.assert_close(run("tv_ct", y, op, lam=1.0, iterations=3, method="pdhg"),
                               tv_pdhg(y, op, 1.0, 3))
    with pytest.raises(TypeError, match=r"sirt: unknown parameter\(s\) iters; valid: "
                                        r"iterations, nonneg, relaxation"):
        run("sirt", y, op, iters=3)


def test_finite_difference_norm_bounds_the_2d_gradient():
    """Fails if variational.py:33 ``sqrt(8)`` -> ``sqrt(2)``: PDHG's step sizes take
    ``||D||`` from this constant, so it must bound the true norm of the 2-D forward
    differences (which approaches sqrt(8) on a large grid: the bound is also tight)."""
    from mrirecon.operators import FiniteDifference
    from mrirecon.recon.variational import FINITE_DIFFERENCE_NORM

    D = FiniteDifference(2)
    x = torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = 0.0
    for _ in range(300):  # power method on D^H D
        y = D.H(D(x))
        lam = float(torch.linalg.vector_norm(y))
        x = y / lam
    assert lam <= FINITE_DIFFERENCE_NORM**2 * (1 + 1e-12)
    assert lam >= 0.9 * 8.0  # the bound is not loose by more than a few percent


@pytest.mark.parametrize("method", ["sirt", "tv_ct", "fbp"])
def test_a_sinogram_of_another_acquisition_is_refused_naming_the_method(method):
    """Fails if a sinogram of 50 views for a 60-view projector fails inside the operator
    ("ParallelBeam.H: input must have shape ...", naming neither the method nor ``y``) instead
    of naming the method, the data and the shape the operator maps to."""
    g = CTGeometry("parallel", (16, 16), np.linspace(0, np.pi, 60, endpoint=False), 23)
    y = ParallelBeam(g)(torch.ones(16, 16))
    with pytest.raises(ValueError, match=rf"{method}: y has shape \(50, 23\), but op "
                                         r"\(ParallelBeam\) maps images to data of shape "
                                         r"\(\.\.\., 60, 23\)"):
        run(method, y[:50], ParallelBeam(g), **({"lam": 0.1} if method == "tv_ct" else {}))
