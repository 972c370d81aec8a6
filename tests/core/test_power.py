"""One power iteration (core/power.py): ``max_eigenvalue`` is ``lambda_max(A^H A) = sigma^2``,
``operator_norm`` is ``sigma``; both are seeded and leave torch's global random state alone."""

from __future__ import annotations

import pytest
import torch

from mrirecon import solvers
from mrirecon.core import max_eigenvalue
from tests.helpers import dense_matrix

F64_EPS = torch.finfo(torch.float64).eps


def _matrix_op():
    from mrirecon.operators import DenseMatrix

    g = torch.Generator().manual_seed(0)
    return DenseMatrix(torch.randn(7, 5, dtype=torch.float64, generator=g))


def test_sigma_and_sigma_squared():
    op = _matrix_op()
    x0 = torch.zeros(5, dtype=torch.float64)
    sigma = torch.linalg.matrix_norm(dense_matrix(op, x0), ord=2)
    lam = max_eigenvalue(op.gram, x0, iterations=500, tolerance=1e-14)
    norm = op.operator_norm(x0, iterations=500, tolerance=1e-14)
    # power iteration on a 5x5 SPD matrix: converged to well below 1e-10 relative after 500 steps
    torch.testing.assert_close(float(lam.reshape(())), float(sigma) ** 2, rtol=1e-10, atol=0)
    torch.testing.assert_close(float(norm), float(sigma), rtol=1e-10, atol=0)
    assert solvers.max_eigenvalue is max_eigenvalue  # one implementation


def test_seeded_and_global_rng_untouched():
    op = _matrix_op()
    x0 = torch.zeros(5, dtype=torch.float64)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = op.operator_norm(x0, iterations=3)  # few steps: the start vector still matters
    b = op.operator_norm(x0, iterations=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert float(a) == float(b)
    c = op.operator_norm(x0, iterations=3, generator=torch.Generator().manual_seed(0))
    assert float(a) == float(c)  # the default is seed 0


def test_a_batch_gets_each_items_estimate_alone():
    """Each batch item drew its own start vector, so after 5 iterations a slice had 31.80 in a
    batch and 35.65 alone; every item now starts from the vector one item alone gets."""
    g = torch.Generator().manual_seed(3)
    w = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    batched = max_eigenvalue(lambda v: w**2 * v, torch.zeros(3, 16, 16, dtype=torch.float64),
                             batch_dims=1, iterations=5)
    for i in range(3):
        alone = max_eigenvalue(lambda v, i=i: w[i : i + 1] ** 2 * v,
                               torch.zeros(1, 16, 16, dtype=torch.float64), batch_dims=1,
                               iterations=5)
        torch.testing.assert_close(batched[i], alone[0], rtol=1e-12, atol=0)


def test_differentiable_estimate_is_that_of_the_steps_taken():
    """``differentiable=True`` records the iterations: autograd's derivative of the estimate in
    a tensor the gram holds is that of the computed value (central differences, float64), and
    the value is bit for bit the default's, which carries no gradient."""
    g = torch.Generator().manual_seed(1)
    m0 = torch.randn(7, 5, dtype=torch.float64, generator=g)
    d = torch.randn(7, 5, dtype=torch.float64, generator=g)
    x0 = torch.zeros(2, 5, dtype=torch.float64)

    def estimate(m, **kw):  # 4 steps: far from converged, so the iterates' derivative matters
        return max_eigenvalue(lambda v: (v @ m.T) @ m, x0, batch_dims=1, iterations=4, **kw)

    m = m0.clone().requires_grad_()
    value = estimate(m, differentiable=True)
    assert torch.equal(value.detach(), estimate(m)) and not estimate(m).requires_grad
    (grad,) = torch.autograd.grad(value.sum(), m)
    h = 1e-6
    fd = float((estimate(m0 + h * d).sum() - estimate(m0 - h * d).sum()) / (2 * h))
    eps = torch.finfo(torch.float64).eps
    assert abs(float((grad * d).sum()) - fd) <= 10 * eps**0.5 * abs(fd)


def test_batched_tolerance_runs_until_the_slowest_item_has_converged():
    """Fails if ``torch.all`` -> ``torch.any`` in the stop rule.

    The docstring's promise: with a ``tolerance``, every item iterates until the slowest has
    converged. Item 0 (``2 I``) converges at the 2nd step, item 1 (eigenvalues 1 and 0.999 on top:
    slow) needs hundreds; the batched estimate of item 1 is then exactly the one item 1 gets alone
    with the same tolerance (same start vector by design, same elementwise arithmetic)."""
    n = 64
    w1 = torch.linspace(0.5, 1.0, n, dtype=torch.float64)
    w1[-2] = 0.999
    w = torch.stack([torch.full((n,), 2.0, dtype=torch.float64), w1])
    x0 = torch.zeros(2, n, dtype=torch.float64)
    kw = dict(batch_dims=1, iterations=5000, tolerance=1e-10)
    batched = max_eigenvalue(lambda v: w * v, x0, **kw)
    alone = max_eigenvalue(lambda v: w[1:] * v, x0[1:], **kw)
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(batched[0], torch.full((1,), 2.0, dtype=torch.float64),
                               rtol=8 * F64_EPS, atol=0)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_power_estimate_never_exceeds_lambda_max(iterations):
    """Fails if start vector not normalised.

    ``||G x||`` for a unit ``x`` is at most ``lambda_max(G)``: after any number of steps the
    estimate is a lower bound (up to rounding), a property step sizes rely on not to be
    overshot by ``sqrt(n)`` when a caller asks for few iterations."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(16, 16, dtype=torch.float64, generator=g) * 0.9 + 0.1
    est = max_eigenvalue(lambda v: w * v, torch.zeros(16, 16, dtype=torch.float64),
                         iterations=iterations)
    assert float(est.reshape(())) <= float(w.max()) * (1 + 16 * F64_EPS)


def test_a_zero_operator_has_lambda_max_zero_not_nan():
    """Fails if ``x = z / new`` without the guard for ``new == 0``.

    A map that is zero (a batch item whose coil maps or mask are all zero) has lambda_max 0; the
    other items of the batch keep their own estimate."""
    x0 = torch.zeros(2, 8, dtype=torch.float64)
    scale = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    est = max_eigenvalue(lambda v: scale * v, x0, batch_dims=1, iterations=4)
    assert torch.isfinite(est).all()
    torch.testing.assert_close(est.reshape(-1), torch.tensor([0.0, 3.0], dtype=torch.float64),
                               rtol=8 * F64_EPS, atol=0)
    alone = max_eigenvalue(lambda v: 0 * v, x0[0], iterations=4)
    assert float(alone.reshape(())) == 0.0
