"""pdhg_step_sizes' refusal of a too-large tau prints a tau it accepts."""

import re

import pytest
import torch

from mrirecon.operators.generic import Diagonal, FiniteDifference
from mrirecon.solvers.pdhg import pdhg_step_sizes


@pytest.mark.parametrize("seed", range(40))
def test_the_advised_tau_is_accepted(seed):
    """"use tau <= {1/bound:.4g}" rounded to nearest: in 20 of 40 such cases the printed value
    was above the bound and, given as tau, refused in turn ("got 1; use tau <= 0.1781")."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(16, 16, generator=g, dtype=torch.float64) * 3 + 0.1
    K = [FiniteDifference(2, (16, 16)), Diagonal(d)]
    x0 = torch.zeros(16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"use tau <= ") as err:
        pdhg_step_sizes(K, x0, sigma=[0.5, 0.3], tau=10.0)
    advised = float(re.search(r"use tau <= ([0-9.e+-]+)", str(err.value)).group(1))
    assert pdhg_step_sizes(K, x0, sigma=[0.5, 0.3], tau=advised)[1] == advised
    # and not far below the bound (4 significant digits rounded down: at most 1e-3 of it; the
    # bound is read back from the message's 4-digit "got tau * bound")
    bound = 10.0 / float(re.search(r"got ([0-9.e+-]+)\)", str(err.value)).group(1))
    assert advised > bound * (1 - 2e-3)


def _two_blocks(n=16):
    from mrirecon.operators import DenseMatrix

    g = torch.Generator().manual_seed(1)
    m = torch.randn(20, n, dtype=torch.float64, generator=g)
    return [DenseMatrix(m), FiniteDifference(1)], torch.zeros(n, dtype=torch.float64)


def _bound(ops, sigmas, x0):
    """||sum_i sigma_i K_i^H K_i|| by dense eigenvalues (the exact step condition)."""
    n = x0.numel()
    eye = torch.eye(n, dtype=torch.float64)
    m = sum(s * torch.stack([k.gram(e) for e in eye], 1) for s, k in zip(sigmas, ops))
    return float(torch.linalg.eigvalsh((m + m.T) / 2).max())


@pytest.mark.parametrize("tau", [0.01, 0.3, 7.0])
def test_pdhg_sigma_chosen_for_a_given_tau_meets_the_step_condition(tau):
    """Only tau given: sigma = 0.99 / (tau ||sum K_i^H K_i||), so tau * ||sum sigma K^H K|| is
    0.99 for any tau (guards against dropping tau from that formula, which broke it for tau > 1 and
    took 100x too small dual steps for tau = 0.01)."""
    ops, x0 = _two_blocks()
    sigmas, t = pdhg_step_sizes(ops, x0, tau=tau)
    assert t == tau
    # power iteration (tolerance 1e-5) approaches the norm from below: within 1e-3 of 0.99
    assert t * _bound(ops, sigmas, x0) == pytest.approx(0.99, rel=1e-3)


@pytest.mark.parametrize("excess", [1.05, 1.5, 1.99])
def test_pdhg_refuses_given_steps_above_the_step_condition(excess):
    """Given sigma and tau with tau ||sum sigma_i K_i^H K_i|| = excess > 1 are refused (kills
    loosening the check's 1 + 1e-6 to 2, which let steps up to twice the limit through)."""
    ops, x0 = _two_blocks()
    sig = [0.5, 0.3]
    tau = excess / _bound(ops, sig, x0)
    with pytest.raises(ValueError, match="violate"):
        pdhg_step_sizes(ops, x0, sigma=sig, tau=tau)
