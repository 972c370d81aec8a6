"""``LinearOperator.gram_bound``: a closed-form upper bound on ``||A||^2``, checked against the
largest eigenvalue of the dense ``A^H A``, exact where it must be, shaped like
``max_eigenvalue``'s output; and the L1-wavelet solver that uses it instead of a power
iteration."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import LinearOperator, max_eigenvalue
from mrirecon.functional import rss
from mrirecon.operators import sense, single_coil
from mrirecon.recon import l1_wavelet
from tests.helpers import random_like_shape

N = 8
EPS = torch.finfo(torch.float64).eps


def _dense_lambda_max(op: LinearOperator, shape: tuple[int, int]) -> float:
    """``lambda_max(A^H A)`` from the dense matrix of ``A^H A`` (columns = gram of unit vectors)."""
    n = shape[0] * shape[1]
    basis = torch.eye(n, dtype=torch.complex128).reshape(n, *shape)
    g = op.gram(basis).reshape(n, n).T
    return float(torch.linalg.eigvalsh(0.5 * (g + g.mH)).max())


def _mask(seed: int, frac: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, generator=g) < frac).double()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sense_bound_is_an_upper_bound_of_the_dense_lambda_max(seed):
    maps = random_like_shape((4, N, N), torch.complex128, seed)  # not normalised
    op = sense(maps, _mask(seed))
    lam = _dense_lambda_max(op, (N, N))
    bound = float(op.gram_bound(torch.zeros(N, N, dtype=torch.complex128)).reshape(()))
    assert bound >= lam * (1 - 100 * EPS)
    # and it is what the docstring says: the largest sum of squares of the maps
    assert bound == pytest.approx(float((maps.abs() ** 2).sum(0).max()), rel=1e-12)


def test_sense_bound_is_exact_when_fully_sampled_and_near_exact_for_smooth_unit_maps():
    maps = random_like_shape((3, N, N), torch.complex128, 5)
    full = sense(maps, torch.ones(N, dtype=torch.float64))
    assert float(full.gram_bound(torch.zeros(N, N, dtype=torch.complex128)).reshape(())) == pytest.approx(
        _dense_lambda_max(full, (N, N)), rel=1e-10)  # A^H A = diag(sum |S|^2)
    # constant maps of unit RSS and a mask holding the DC column: A^H A has the
    # constant image as an eigenvector with eigenvalue 1 = the bound
    unit = torch.ones(2, N, N, dtype=torch.complex128) / 2 ** 0.5
    m = _mask(3)
    m[N // 2] = 1
    op = sense(unit, m)
    assert float(op.gram_bound(torch.zeros(N, N, dtype=torch.complex128)).reshape(())) == pytest.approx(1.0, rel=1e-12)
    assert _dense_lambda_max(op, (N, N)) == pytest.approx(1.0, rel=1e-10)


def test_bound_shape_matches_max_eigenvalue_per_slice():
    maps = random_like_shape((3, 2, N, N), torch.complex128, 7)
    maps = maps / rss(maps, dim=-3).unsqueeze(-3)
    maps[1] *= 2.0  # a second slice with a 4x larger bound
    op = sense(maps, _mask(4))
    x = torch.zeros(3, N, N, dtype=torch.complex128)
    bound = op.gram_bound(x)
    est = max_eigenvalue(op.gram, x, batch_dims=1, iterations=200)
    assert bound.shape == est.shape == (3, 1, 1)
    assert torch.all(bound >= est * (1 - 1e-9))
    torch.testing.assert_close(bound.flatten(), torch.tensor([1.0, 4.0, 1.0], dtype=torch.float64))
    # one set of maps for a batch of images: one bound per image
    shared = sense(maps[0], _mask(4))
    assert shared.gram_bound(x).shape == (3, 1, 1)


def test_scaled_and_composed_operators_pass_the_bound_on():
    op = single_coil(_mask(2))  # P @ F
    x = torch.zeros(2, N, N, dtype=torch.complex128)
    torch.testing.assert_close(op.gram_bound(x), torch.ones(2, 1, 1, dtype=torch.float64))
    scaled = (3.0 - 4.0j) * op
    torch.testing.assert_close(scaled.gram_bound(x), torch.full((2, 1, 1), 25.0, dtype=torch.float64))
    assert scaled.gram_bound(x)[0, 0, 0] >= _dense_lambda_max(scaled, (N, N)) * (1 - 100 * EPS)
    # an operator without a closed form says so
    assert (op + op).gram_bound(x) is None


def _unit_rss_problem(seed: int, stride: int):
    """4 random coils with unit RSS on 16 x 16, every ``stride``-th column plus 4 centre ones."""
    maps = random_like_shape((4, 16, 16), torch.complex128, seed)
    maps = maps / rss(maps, dim=-3).unsqueeze(-3)
    m = (torch.arange(16) % stride == 0).double()
    m[6:10] = 1
    op = sense(maps, m)
    return op, op(random_like_shape((16, 16), torch.complex128, seed + 1))


def test_l1_wavelet_uses_the_bound_and_no_power_iteration():
    op, y = _unit_rss_problem(9, 2)
    calls = {"n": 0}
    gram = op.gram

    def counting(x):
        calls["n"] += 1
        return gram(x)

    op.gram = counting
    iterations = 7
    x_bound = l1_wavelet(y, op, 1e-3, iterations=iterations, random_shift=False)
    assert calls["n"] == iterations  # no power iteration before FISTA
    bound = float(op.gram_bound(y[0]).reshape(()))
    assert bound == pytest.approx(1.0, rel=100 * EPS)  # unit-RSS maps
    x_step = l1_wavelet(y, op, 1e-3, iterations=iterations, random_shift=False, step=1.0 / bound)
    torch.testing.assert_close(x_bound, x_step, rtol=0, atol=0)
    calls["n"] = 0
    l1_wavelet(y, op, 1e-3, iterations=iterations, random_shift=False, power_iterations=30)
    assert calls["n"] == iterations + 30  # SigPy's rule on request


def test_l1_wavelet_bound_and_power_steps_reach_the_same_minimiser():
    """Both steps are valid (the bound is >= ||A||^2, the power estimate ~ it), so FISTA on the
    fixed objective converges to the same point from either."""
    op, y = _unit_rss_problem(11, 3)
    a = l1_wavelet(y, op, 1e-2, iterations=3000, random_shift=False, restart=True)
    b = l1_wavelet(y, op, 1e-2, iterations=3000, random_shift=False, restart=True,
                   power_iterations=100)
    assert float((a - b).norm() / b.norm()) < 1e-6


def test_composed_and_tensor_scaled_gram_bounds_are_upper_bounds():
    """Fails if ``ComposedOperator.gram_bound`` as the max
    of the parts instead of their product, or a tensor factor's bound scaled by ``|c|``
    not ``|c|^2``.

    ``||A B||^2 <= ||A||^2 ||B||^2`` and ``||c A||^2 = |c|^2 ||A||^2``; the bound is what
    ``l1_wavelet`` takes as its Lipschitz constant, so a bound under ``lambda_max`` is a step
    that diverges. Parts with bounds other than 1 (the existing test has only unit parts)."""
    from mrirecon.operators import single_coil

    n = 8
    mask = torch.zeros(n, dtype=torch.float64)
    mask[::2] = 1
    pf = single_coil(mask)  # Sampling @ Fourier, each part bounded by 1
    x = torch.zeros(2, n, n, dtype=torch.complex128)
    composed = (2.0 * pf.outer) @ (3.0 * pf.inner)
    lam = _dense_lambda_max(composed, (n, n))
    assert lam == pytest.approx(36.0, rel=1e-10)
    assert float(composed.gram_bound(x).max()) >= lam * (1 - 100 * EPS)
    scaled = torch.tensor(3.0, dtype=torch.float64) * pf
    lam_s = _dense_lambda_max(scaled, (n, n))
    assert float(scaled.gram_bound(x).max()) >= lam_s * (1 - 100 * EPS)
    torch.testing.assert_close(scaled.gram_bound(x), torch.full((2, 1, 1), 9.0, dtype=torch.float64))
