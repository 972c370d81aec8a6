"""Forward finite differences with Neumann boundary, their exact adjoint (negative divergence),
and the same two maps for ``|D|``, the element-wise absolute value of the difference matrix
(the row/column sums that Pock-Chambolle diagonal preconditioning needs)."""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.core.checks import require_floating


def forward_difference(x: Tensor, dim: int, *, absolute: bool = False) -> Tensor:
    """``d[i] = x[i+1] - x[i]`` for ``i < N-1`` and ``d[N-1] = 0`` along ``dim``.

    ``absolute=True`` applies ``|D|`` instead: ``d[i] = x[i+1] + x[i]`` (same zero last entry).
    """
    require_floating(x, "forward_difference (operators.FiniteDifference)")
    d = torch.zeros_like(x)
    n = x.shape[dim]
    nxt, cur = x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1)
    d.narrow(dim, 0, n - 1).copy_(nxt + cur if absolute else nxt - cur)
    return d


def forward_difference_adjoint(d: Tensor, dim: int, *, absolute: bool = False) -> Tensor:
    """Adjoint of :func:`forward_difference`: ``x[i] = d[i-1] - d[i]`` with the boundary rows
    (``absolute=True``: ``|D|^T``, ``x[i] = d[i-1] + d[i]``)."""
    require_floating(d, "forward_difference_adjoint (operators.FiniteDifference)")
    n = d.shape[dim]
    x = torch.zeros_like(d)
    inner = d.narrow(dim, 0, n - 1)
    if absolute:
        x.narrow(dim, 0, n - 1).add_(inner)
    else:
        x.narrow(dim, 0, n - 1).sub_(inner)
    x.narrow(dim, 1, n - 1).add_(inner)
    return x
