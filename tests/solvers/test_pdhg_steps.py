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
