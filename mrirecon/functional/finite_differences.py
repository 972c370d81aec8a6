"""Forward finite differences with Neumann boundary and their exact adjoint (negative divergence)."""

from __future__ import annotations

import torch
from torch import Tensor


def forward_difference(x: Tensor, dim: int) -> Tensor:
    """``d[i] = x[i+1] - x[i]`` for ``i < N-1`` and ``d[N-1] = 0`` along ``dim``."""
    d = torch.zeros_like(x)
    n = x.shape[dim]
    d.narrow(dim, 0, n - 1).copy_(x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1))
    return d


def forward_difference_adjoint(d: Tensor, dim: int) -> Tensor:
    """Adjoint of :func:`forward_difference`: ``x[i] = d[i-1] - d[i]`` with the boundary rows."""
    n = d.shape[dim]
    x = torch.zeros_like(d)
    inner = d.narrow(dim, 0, n - 1)
    x.narrow(dim, 0, n - 1).sub_(inner)
    x.narrow(dim, 1, n - 1).add_(inner)
    return x
