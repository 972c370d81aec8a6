"""CG on a semi-definite gram (no regularisation) once the residual is rounding noise."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

from mrirecon.operators import sense
from mrirecon.solvers import cg


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_cg_stays_at_the_solution_of_a_projection_gram(dtype):
    """One coil with a unit-magnitude map: the gram ``F^H M F`` is a projection, so ``b = A^H y``
    solves ``gram(x) = b`` and CG reaches it in one step. The residual is then rounding noise with
    components in the gram's null space (unsampled columns), where ``p^H A p`` is itself noise.
    Before the Rayleigh-quotient guard, 3 of these 20 float32 problems returned ``x`` up to 9e8
    times the solution (exit 0; ``mri_retrospective`` with Walsh maps on a single-coil file
    scored -174 dB). After: ``x`` is ``b`` to within rounding of the one step taken."""
    h, w = 64, 48
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::4] = True
    mask[w // 2 - 3 : w // 2 + 3] = True
    eps = torch.finfo(dtype).eps
    gen = torch.Generator().manual_seed(0)
    errors = []
    for _ in range(20):
        img = torch.randn(h, w, dtype=dtype, generator=gen)
        phase = 2 * math.pi * torch.rand(1, h, w, generator=gen, dtype=img.real.dtype)
        op = sense(torch.polar(torch.ones_like(phase), phase), mask)
        b = op.adjoint(op.forward(img))
        x = cg(op.gram, b, iterations=20)
        errors.append(float((x - b).norm() / b.norm()))
    # one step rounds each element a few times (FFTs of log2(h w) stages): bound it by 8 eps per
    # stage; the failure is 1e9
    assert max(errors) <= 8 * eps * math.log2(h * w), errors


def test_a_batch_keeps_stepping_where_its_other_system_has_stalled():
    """Systems are guarded one by one (``batch_dims``): a well-conditioned system beside a
    stalled one still converges, to the float64 solution of ``(D + lam) x = b``."""
    gen = torch.Generator().manual_seed(1)
    d = torch.rand(2, 50, generator=gen, dtype=torch.float64)
    d[0, 25:] = 0.0  # system 0: semi-definite, b in its range
    d[1] += 0.5  # system 1: positive definite
    b = d * torch.randn(2, 50, generator=gen, dtype=torch.float64) + torch.tensor([[0.0], [1.0]])
    x = cg(lambda v: d * v, b, iterations=60, batch_dims=1)
    torch.testing.assert_close(x[1], b[1] / d[1], rtol=1e-10, atol=0)
    x0 = torch.where(d[0] > 0, b[0] / torch.where(d[0] > 0, d[0], 1.0), 0.0)
    torch.testing.assert_close(x[0], x0, rtol=1e-8, atol=1e-8)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stall_at_rounding_counts_as_converged(caplog):
    """The projection gram above with a tolerance below float32's reach: CG freezes after two or
    three steps with the residual at 1.4e-7 of ``||b||``, rounding noise along the null space;
    that is converged, and nothing is reported."""
    h, w = 64, 48
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::4] = True
    gen = torch.Generator().manual_seed(2)
    phase = 2 * math.pi * torch.rand(1, h, w, generator=gen)
    op = sense(torch.polar(torch.ones_like(phase), phase), mask)
    b = op.adjoint(op.forward(torch.randn(h, w, dtype=torch.complex64, generator=gen)))
    caplog.set_level(logging.WARNING, "mrirecon")
    steps = []
    cg(op.gram, b, iterations=20, tolerance=1e-9, callback=lambda i, x, r: steps.append(i))
    assert len(steps) < 20 and not _warnings(caplog)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_stall_far_above_rounding_is_reported(dtype, caplog):
    """Ten eigenvalues 1 and one below the dtype's resolution, ``b`` all ones: CG freezes with
    a third of ``b`` left along the small eigenvalue (relative residual 0.32). It was counted as
    converged: no word, although a tolerance was asked. A ``b`` whose part there is sqrt(eps) of the
    rest (as a consistent ``A^H y`` has at most) is rounding and stays silent."""
    eps = torch.finfo(dtype).eps
    d = torch.ones(11, dtype=dtype)
    d[-1] = eps  # below RAYLEIGH_FLOOR * eps of the largest eigenvalue: the null space to CG
    caplog.set_level(logging.WARNING, "mrirecon")
    x = cg(lambda v: d * v, torch.ones(11, dtype=dtype), iterations=50, tolerance=1e-6)
    assert float((d * x - 1).norm()) / math.sqrt(11) > 0.3  # what float rounding allows
    said = _warnings(caplog)
    assert len(said) == 1 and "it stalled" in said[0] and "relative residual of 0.3" in said[0]
    assert "iteration limit" not in said[0]
    ran = int(re.search(r"stopped after (\d+) iteration", said[0]).group(1))
    assert 1 <= ran <= 11  # the iterations CG ran before it froze, not the limit of 50
    caplog.clear()
    b = torch.ones(11, dtype=dtype)
    b[-1] = eps**0.5
    cg(lambda v: d * v, b, iterations=50, tolerance=1e-6)
    assert not _warnings(caplog)


def test_a_zero_rhs_from_a_warm_start_stops_and_is_not_reported(caplog):
    """``rhs`` 0 with a start ``x0``: the threshold was ``tolerance * ||rhs|| = 0``, so CG ran to
    its limit and reported a relative residual of 1.8e-59 above its tolerance."""
    gen = torch.Generator().manual_seed(3)
    d = torch.rand(30, generator=gen, dtype=torch.float64) + 0.1
    caplog.set_level(logging.WARNING, "mrirecon")
    steps = []
    x = cg(lambda v: d * v, torch.zeros(30, dtype=torch.float64),
           torch.randn(30, generator=gen, dtype=torch.float64), iterations=200, tolerance=1e-8,
           callback=lambda i, x, r: steps.append(i))
    assert float(x.abs().max()) < 1e-6 and len(steps) < 200  # the start's 1e-8
    assert not _warnings(caplog)
