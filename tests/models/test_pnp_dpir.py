"""PnP-DPIR and its bias-free, noise-level-conditioned denoiser: scale equivariance, schedule,
data consistency, on MRI and CT operators (untrained weights: these are properties of the maths)."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.models.pnp.denoisers import NoiseLevelDenoiser
from mrirecon.models.pnp.dpir import PnPDPIR, robust_scale
from mrirecon.models.registry import build_model
from mrirecon.operators import ct_operator
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.mri import sense

EPS64 = torch.finfo(torch.float64).eps


class _Identity(torch.nn.Module):
    def forward(self, x, sigma):
        return x


def _mri_problem(n=32, coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, n, dtype=torch.complex128, generator=g)
    maps = torch.randn(1, coils, n, n, dtype=torch.complex128, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::3] = True
    mask[n // 2 - 3:n // 2 + 3] = True
    op = sense(maps, mask)
    return op(x), op


@pytest.mark.parametrize("c", [1e-3, 7.0, 1e3])
def test_denoiser_is_positively_homogeneous(c):
    torch.manual_seed(0)
    d = NoiseLevelDenoiser(depth=5, features=8).double()
    x = torch.randn(3, 16, 16, dtype=torch.complex128)
    sigma = torch.tensor([0.01, 0.1, 0.3], dtype=torch.float64)
    out = d(x, sigma)
    scaled = d(c * x, c * sigma)
    # bias-free convs + ReLU: exact in exact arithmetic; rounding ~ eps * depth * sqrt(9 * features)
    tol = 10 * EPS64 * 5 * math.sqrt(9 * 8)
    assert (scaled - c * out).abs().max() <= tol * c * out.abs().max()
    assert out.dtype == x.dtype and out.shape == x.shape


def test_denoiser_keeps_real_images_real_and_rejects_bad_depth():
    d = NoiseLevelDenoiser(depth=3, features=4)
    x = torch.rand(2, 8, 8)
    assert not d(x, 0.1).is_complex()
    with pytest.raises(ValueError, match="depth"):
        NoiseLevelDenoiser(depth=1)


def test_schedule_is_geometric_between_the_limits():
    m = PnPDPIR(iterations=5, sigma_max=0.2, sigma_min=0.002)
    s = m.sigmas()
    assert len(s) == 5 and s[0] == pytest.approx(0.2) and s[-1] == pytest.approx(0.002)
    ratios = [b / a for a, b in zip(s, s[1:])]
    assert max(ratios) - min(ratios) < 1e-12
    assert PnPDPIR(iterations=1).sigmas() == [0.01]
    with pytest.raises(ValueError):
        PnPDPIR(sigma_min=0.2, sigma_max=0.1)


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_mri_output_scales_with_the_data(c):
    torch.manual_seed(1)
    y, op = _mri_problem()
    model = PnPDPIR(iterations=3, cg_iterations=4, depth=4, features=8).double().eval()
    with torch.no_grad():
        a, b = model(y, op), model(c * y, op)
    # every step (CG, quantile scale, bias-free CNN) is exactly scale-equivariant; rounding of
    # 3 x (4 CG + CNN) float64 steps of size 32^2 stays far below 1e-9 relative
    assert (b - c * a).abs().max() <= 1e-9 * c * a.abs().max()


def test_ct_output_scales_with_the_data():
    torch.manual_seed(2)
    geom = CTGeometry.parallel((24, 24), num_views=12)
    op = ct_operator(geom)
    x = torch.rand(1, 24, 24, dtype=torch.float64)
    y = op(x)
    norm = float(op.operator_norm(torch.zeros(1, 24, 24, dtype=torch.float64), iterations=50))
    opn = op * (1.0 / norm)
    model = PnPDPIR(iterations=2, cg_iterations=4, depth=3, features=4).double().eval()
    with torch.no_grad():
        a, b = model(y / norm, opn), model(1e3 * y / norm, opn)
    assert not a.is_complex()
    assert (b - 1e3 * a).abs().max() <= 1e-9 * 1e3 * a.abs().max()


def test_identity_denoiser_limit_is_data_consistent_least_squares():
    """With D = identity the iteration is proximal-point least squares: A x -> y on the range."""
    y, op = _mri_problem(n=16)
    model = PnPDPIR(iterations=20, sigma_max=1.0, sigma_min=1.0, lam=1e-3, cg_iterations=20).double()
    model.denoiser = _Identity()
    with torch.no_grad():
        x = model(y, op)
    assert (op(x) - y).norm() <= 1e-6 * y.norm()


class _Shrink(torch.nn.Module):
    """A known linear "denoiser": ``D(v, sigma) = v / 2`` (whatever sigma)."""

    def forward(self, x, sigma):
        return 0.5 * x


@pytest.mark.parametrize("sigma", [0.125, 0.25])
def test_one_iteration_is_the_data_step_with_rho_lam_over_sigma_squared(sigma):
    """K = 1 (sigma_0 = sigma_min), D(v) = v / 2: the output is ``(A^H A + rho I)^{-1} (A^H y +
    rho x0 / 2)`` with ``rho = lam / sigma^2`` and ``x0 = (A^H A + init_rho I)^{-1} A^H y``,
    independent of the image scale ``s`` (every step is linear in the data), against dense
    solves. CG on unit-RSS SENSE (||A|| <= 1): condition number at most ``(1 + rho) / rho``,
    converged far below the float64 floor in the iteration counts used (checked below); rho =
    lam / sigma or lam would miss by O(1)."""
    from tests.helpers import dense_matrix

    y, op = _mri_problem(n=12, coils=2, seed=3)
    # dyadic weights (rho 1 and 0.25; lam / sigma 0.125 and 0.0625; lam 0.0156): solve_proximal
    # makes a float weight a float32 tensor before the solve's dtype, which would shift a weight
    # like 0.3 by 4e-8 relative, far above float64 rounding
    lam = 2.0**-6
    rho, init_rho = lam / sigma**2, 0.5
    iters = 80
    for r in (rho, init_rho):  # CG error bound 2 sqrt(kappa) q^k, q = (sqrt(kappa) - 1) / (sqrt(kappa) + 1)
        kappa = (1 + r) / r
        assert 2 * kappa**0.5 * ((kappa**0.5 - 1) / (kappa**0.5 + 1)) ** iters < EPS64
    model = PnPDPIR(iterations=1, sigma_max=0.5, sigma_min=sigma, lam=lam, cg_iterations=iters,
                    init_rho=init_rho, init_iterations=iters).double()
    model.denoiser = _Shrink()
    with torch.no_grad():
        x = model(y, op)
        aty = op.H(y)
        A = dense_matrix(op, aty[0])
    G, b = A.conj().T @ A, aty.reshape(-1)
    eye = torch.eye(G.shape[0], dtype=G.dtype)
    x0 = torch.linalg.solve(G + init_rho * eye, b)
    ref = torch.linalg.solve(G + rho * eye, b + rho * 0.5 * x0)
    # float64 rounding of two solves with condition numbers <= (1 + r) / r, size n = 144
    tol = 10 * math.sqrt(ref.numel()) * EPS64 * ((1 + rho) / rho + (1 + init_rho) / init_rho)
    assert x.shape == aty.shape
    assert float((x.reshape(-1) - ref).norm()) <= tol * float(ref.norm())
    # the schedule matters here: the solution with rho = lam / sigma is far from it
    other = torch.linalg.solve(G + lam / sigma * eye, b + lam / sigma * 0.5 * x0)
    assert float((other - ref).norm()) > 1e3 * tol * float(ref.norm())


def test_registry_builds_pnp_dpir_and_robust_scale_is_a_quantile():
    m = build_model("pnp_dpir", iterations=4)
    assert isinstance(m, PnPDPIR) and m.iterations == 4
    x = torch.arange(1, 1001, dtype=torch.float32).reshape(1, 10, 100)
    assert float(robust_scale(x, 0.5)) == pytest.approx(500.5)
    # the default, which the shipped denoisers' schedules were tuned with: the 99.5th percentile
    assert float(robust_scale(x)) == pytest.approx(float(torch.quantile(x.flatten(), 0.995)))
