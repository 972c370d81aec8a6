"""Data-consistency layers: each reduces ||Ax - y|| as the theory says, on MRI and CT operators."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models.blocks import GradientDC, HardProjectionDC, ProximalDC, SoftKspaceDC, solve_proximal, kspace_mask
from mrirecon.solvers import cg
from tests.models.problems import ct_problem, mri_problem


def _residual(op, x, y):
    return float(torch.linalg.vector_norm(op(x) - y).detach())


@pytest.mark.parametrize("problem", [mri_problem, ct_problem], ids=["mri", "ct"])
def test_gradient_step_with_small_eta_reduces_residual(problem):
    x_true, y, op = problem(dtype=torch.complex128 if problem is mri_problem else torch.float64)
    x = torch.zeros_like(x_true)
    eta = 0.5 / float(op.operator_norm(x_true, generator=torch.Generator().manual_seed(0))) ** 2
    dc = GradientDC(eta=eta)
    before = _residual(op, x, y)
    for _ in range(3):
        x_new = dc(x, y, op)
        assert _residual(op, x_new, y) < _residual(op, x, y)
        x = x_new
    assert _residual(op, x, y) < 0.9 * before
    # the step is exactly x - eta A^H(Ax - y)
    ref = x - eta * op.H(op(x) - y)
    assert torch.allclose(dc(x, y, op), ref, atol=1e-12)


@pytest.mark.parametrize("problem", [mri_problem, ct_problem], ids=["mri", "ct"])
def test_cg_dc_small_lambda_approaches_least_squares(problem):
    x_true, y, op = problem(dtype=torch.complex128 if problem is mri_problem else torch.float64)
    z = 0.5 * x_true  # not zero, so that the optimality check below sees the lam z term
    # reference least-squares solution (regularised minimally so that it is unique)
    ls = cg(lambda v: op.gram(v) + 1e-9 * v, op.H(y), iterations=500, tolerance=1e-14, batch_dims=1)
    errors = []
    scale = float(op.operator_norm(z, generator=torch.Generator().manual_seed(0))) ** 2
    for lam in (1e-1 * scale, 1e-3 * scale, 1e-5 * scale):
        dc = ProximalDC(lam=lam, cg_iterations=300, tolerance=1e-13)
        x = dc(z, y, op)
        # optimality of (A^H A + lam I) x = A^H y + lam z
        res = op.gram(x) + lam * x - op.H(y) - lam * z
        assert float(torch.linalg.vector_norm(res).detach()) < 1e-8 * float(torch.linalg.vector_norm(op.H(y)))
        errors.append(_residual(op, x, y) - _residual(op, ls, y))
    assert errors[0] > errors[1] > errors[2] >= -1e-8
    assert errors[2] < 1e-3 * _residual(op, torch.zeros_like(z), y)


def test_hard_projection_makes_sampled_data_exact():
    x_true, y, op = mri_problem(dtype=torch.complex128)
    mask = kspace_mask(op)
    k = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
    out = HardProjectionDC()(k, y, mask)
    assert torch.equal(torch.masked_select(out, mask.expand_as(out)), torch.masked_select(y, mask.expand_as(y)))
    assert torch.equal(torch.masked_select(out, ~mask.expand_as(out)), torch.masked_select(k, ~mask.expand_as(k)))
    # noisy-data weighting: (k + nu y) / (1 + nu) on sampled locations
    nu = 3.0
    weighted = HardProjectionDC(lam=nu)(k, y, mask)
    assert torch.allclose(weighted, torch.where(mask, (k + nu * y) / (1 + nu), k))


def test_hard_projection_image_domain_exact_for_single_coil():
    from mrirecon.operators import sense

    x_true, _, op2 = mri_problem(dtype=torch.complex128)
    phase = op2.maps[:1] / op2.maps[:1].abs()  # one coil, unit magnitude
    op = sense(phase, op2.mask)
    y = op(x_true)
    x = torch.zeros_like(x_true)
    x_dc = HardProjectionDC().image(x, y, op)
    assert _residual(op, x_dc, y) < 1e-10 * float(torch.linalg.vector_norm(y))


def test_soft_dc_weight_one_gives_exact_data_and_zero_leaves_k():
    _, y, op = mri_problem(dtype=torch.complex128)
    mask = kspace_mask(op)
    k = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    out = SoftKspaceDC(1.0)(k, y, mask)
    assert torch.allclose(torch.where(mask, out, 0), y, atol=1e-14)
    assert torch.equal(torch.where(mask, 0, out), torch.where(mask, 0, k))
    half = SoftKspaceDC(0.5)(k, y, mask)
    assert torch.allclose(half, torch.where(mask, 0.5 * (k + y), k), atol=1e-14)
    with torch.no_grad():
        assert torch.equal(SoftKspaceDC(0.0)(k, y, mask), k)


def test_kspace_dc_needs_cartesian_operator():
    _, y, op = ct_problem()
    with pytest.raises(TypeError, match="k-space data consistency needs an operator with the HasSamplingMask"):
        kspace_mask(op)


@pytest.mark.parametrize("problem", [mri_problem, ct_problem], ids=["mri", "ct"])
def test_implicit_cg_backward_equals_unrolled_backprop(problem):
    dtype = torch.complex128 if problem is mri_problem else torch.float64
    x_true, y, op = problem(dtype=dtype)
    g = torch.Generator().manual_seed(4)
    weights = torch.randn(x_true.shape, dtype=dtype, generator=g)
    grads = {}
    lam0, tolerance = 0.2, 1e-14
    for implicit in (True, False):
        z = (0.3 * x_true).clone().requires_grad_(True)
        lam = torch.tensor([lam0], dtype=torch.float64, requires_grad=True)
        rhs = op.H(y) + lam * z
        x = solve_proximal(op.gram, rhs, lam, iterations=200, tolerance=tolerance,
                           batch_dims=1, implicit=implicit)
        loss = (weights.conj() * x).real.sum() if dtype.is_complex else (weights * x).sum()
        loss = loss + (x.abs() ** 2).sum()
        grads[implicit] = torch.autograd.grad(loss, (z, lam))
    # Both are exact for the exact solution. CG stops at relative residual max(tolerance, eps),
    # so the iterate is off by kappa times that, and differentiating through the stopped
    # iterations (whose step sizes depend on the data) costs one more factor kappa; the
    # implicit backward is off by kappa * tolerance only. Bound: 10 kappa^2 max(tolerance, eps)
    # (kappa = 924 on the CT problem, 6 on the MRI one).
    norm = float(op.operator_norm(x_true, generator=torch.Generator().manual_seed(0))) ** 2
    kappa = (norm + lam0) / lam0
    bound = 10 * kappa**2 * max(tolerance, torch.finfo(torch.float64).eps)
    for a, b in zip(grads[True], grads[False]):
        rel = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a))
        assert rel <= bound, (rel, bound)
    assert float(grads[True][1].abs()) > 0


def test_proximal_dc_learns_lambda_gradient_and_falls_back_when_operator_needs_grad():
    x_true, y, op = mri_problem(dtype=torch.complex128)
    dc = ProximalDC(lam=0.1, cg_iterations=20)
    out = dc(0.5 * x_true, y, op)  # z != the data-consistent solution, so lam matters
    out.abs().sum().backward()
    assert dc.lam.grad is not None and torch.isfinite(dc.lam.grad).all() and float(dc.lam.grad.abs()) > 0
    # an operator whose maps require a gradient gets them through the implicit backward too
    from mrirecon.operators import sense

    grads = []
    for implicit in (True, False):
        maps = op.maps.clone().requires_grad_(True)
        dc = ProximalDC(lam=0.1, cg_iterations=30, implicit=implicit)  # converged, no breakdown
        out = dc(x_true, y, sense(maps, op.mask))
        out.abs().sum().backward()
        assert maps.grad is not None and float(maps.grad.abs().sum()) > 0
        grads.append(maps.grad)
    # CG freezes once converged to machine precision, so backprop through the unrolled iterations
    # is the derivative of a finite algorithm: equal to the implicit one to ~1e-5, not 1e-8
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-8)
