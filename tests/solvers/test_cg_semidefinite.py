"""CG on a semi-definite gram (no regularisation) once the residual is rounding noise."""

from __future__ import annotations

import math

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
