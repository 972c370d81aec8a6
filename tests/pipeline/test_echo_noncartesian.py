"""A partial echo in radial data: the phase constraint of mri_radial_cs, its detection from the
spokes' directions, and the learned pipeline's warning."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.core import inner
from mrirecon.functional.nufft import DEFAULT_EPS
from mrirecon.operators import PhaseConstrained, nufft_sense
from mrirecon.sampling import radial_trajectory
from tests.helpers import TOL, check_gram, check_linearity, check_vjp, random_like_shape

# ---- the operator ---------------------------------------------------------------------------

@pytest.mark.parametrize("real", [torch.float64, torch.float32])
def test_phase_constrained_is_the_adjoint_in_the_real_inner_product(real):
    """P x = p x on real x, P^H y = Re(conj(p) y): <P x, y> and <x, P^H y> agree in the real
    inner product of the complex range (the real part of the complex one), also for A @ P with
    the NUFFT operator; the complex inner product keeps an imaginary part that no real x^T can
    give, so P has no adjoint there: the domain is real, and a complex image is refused."""
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    tol = TOL[real]
    p = torch.sgn(random_like_shape((2, 12, 10), cplx, 3))
    P = PhaseConstrained(p)
    x = random_like_shape((2, 12, 10), real, 4)
    y = random_like_shape((2, 12, 10), cplx, 5)
    lhs, rhs = inner(P(x), y), inner(x, P.H(y))
    scale = float(torch.linalg.vector_norm(P(x)) * torch.linalg.vector_norm(y))
    assert abs(float(lhs.real - rhs)) / scale < tol
    assert abs(float(lhs.imag)) / scale > 1e3 * tol  # the complex inner product differs
    check_linearity(P, x, tol)
    check_gram(P, x, tol)
    check_vjp(P, x, tol)  # autograd of a real-to-complex map is this adjoint
    with pytest.raises(TypeError, match="must be real"):
        P(x.to(cplx))
    # composed with the radial operator (Toeplitz gram): the real problem tv(phase=) solves
    maps = torch.sgn(random_like_shape((3, 12, 10), cplx, 6)) / math.sqrt(3)
    A = nufft_sense(maps, radial_trajectory(9, 24)) @ PhaseConstrained(p[0])
    x, y = x[0], random_like_shape(A(x[0]).shape, cplx, 7)
    lhs, rhs = inner(A(x), y).real, inner(x, A.H(y))
    scale = float(torch.linalg.vector_norm(A(x)) * torch.linalg.vector_norm(y))
    assert abs(float(lhs - rhs)) / scale < 10 * DEFAULT_EPS[cplx]  # the NUFFT's accuracy
    assert A.gram(x).dtype == real
