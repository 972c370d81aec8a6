"""Plug-and-play continuation (sigma and rho per iteration) and ADMM's stopping rule."""

import torch

from mrirecon.operators import sense
from mrirecon.recon.nonlocal_pnp import plug_and_play


def _scaled_fft(a, shape=(8, 8)):
    """A = a F (one coil of constant map a, every sample): A^H A = a^2 I, ||A||^2 = a^2."""
    return sense(torch.full((1, *shape), a, dtype=torch.complex128), torch.ones(shape, dtype=torch.bool))


def test_pnp_continuation_of_sigma_and_rho():
    """With A^H A = a^2 I the CG data step is exact in one iteration, so with an
    identity denoiser HQS gives x_{k+1} - x* = rho_k / (a^2 + rho_k) (x_k - x*), x* = A^H y / a^2,
    rho_k = rho a^2 gamma^k; the denoiser sees sigma_k = sigma gamma^(-k/2)."""
    g = torch.Generator().manual_seed(0)
    a, rho, gamma, sigma, n = 2.0, 1.0, 1.44, 0.3, 5
    op = _scaled_fft(a)
    y = torch.randn(1, 8, 8, dtype=torch.complex128, generator=g)
    x0 = torch.randn(8, 8, dtype=torch.complex128, generator=g)
    seen, xs = [], []

    def identity(img, s):
        seen.append(s)
        return img

    plug_and_play(y, op, identity, iterations=n, method="hqs", rho=rho, gamma=gamma, sigma=sigma,
                  cg_iterations=1, x0=x0, callback=lambda it, x, rel: xs.append(x.clone()))
    # sigma is carried as a float32 tensor (torch's default dtype): a few float32 eps
    tol = 4 * torch.finfo(torch.float32).eps * sigma
    assert len(seen) == n
    assert all(abs(s - sigma * gamma ** (-k / 2)) <= tol for k, s in enumerate(seen)), seen
    x_star = op.H(y) / a ** 2
    err = [float(torch.linalg.vector_norm(x - x_star)) for x in [x0] + xs]
    for k in range(n):
        rho_k = rho * a ** 2 * gamma ** k
        assert abs(err[k + 1] / err[k] - rho_k / (a ** 2 + rho_k)) <= 1e-9


def test_pnp_admm_never_stops_on_its_first_iteration():
    """From the least-squares start
    ADMM's first x-update reproduces x0, so without the guard any tolerance above its change
    returned the start image after one iteration (docstring of _converged). A mild denoiser
    (0.999 x) changes the start by 1e-3 < tolerance: one more iteration must still run."""
    g = torch.Generator().manual_seed(1)
    op = _scaled_fft(1.0)
    y = torch.randn(1, 8, 8, dtype=torch.complex128, generator=g)
    its = []
    plug_and_play(y, op, lambda img, s: 0.999 * img, iterations=10, method="admm", sigma=0.1,
                  tolerance=1e-2, cg_iterations=1, init_iterations=1,
                  callback=lambda it, x, rel: its.append(it))
    assert len(its) >= 2


def test_pnp_admm_tolerance_also_waits_for_z_to_settle():
    """With an
    identity denoiser the primal residual x - z is 0 at every iteration while z still moves
    towards x* = A^H y / a^2 (x0 far from it), so the rule must wait for the change of z: when
    it stops early, the last relative change of x (= that of z here) is within the tolerance."""
    g = torch.Generator().manual_seed(2)
    op = _scaled_fft(1.0)
    y = torch.randn(1, 8, 8, dtype=torch.complex128, generator=g)
    x0 = 10 * torch.randn(8, 8, dtype=torch.complex128, generator=g)
    rels = []
    plug_and_play(y, op, lambda img, s: img, iterations=200, method="admm", sigma=0.1, rho=1.0,
                  gamma=1.0, tolerance=1e-3, cg_iterations=1, x0=x0,
                  callback=lambda it, x, rel: rels.append(rel))
    assert len(rels) < 200 and rels[-1] <= 1e-3 * (1 + 1e-9)
