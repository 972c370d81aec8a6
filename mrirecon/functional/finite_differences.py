"""Forward finite differences with Neumann boundary, their exact adjoint (negative divergence),
and the same two maps for ``|D|``, the element-wise absolute value of the difference matrix
(the row/column sums that Pock-Chambolle diagonal preconditioning needs)."""

from __future__ import annotations

import torch
from torch import Tensor


def _check_dtype(x: Tensor, who: str) -> None:
    """Refuse integer and boolean tensors, as the CT projectors do: differences of a uint8
    image wrapped around (an error of 256), and TV / TGV steps need floating point anyway."""
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{who} (operators.FiniteDifference): input must be float32/float64 or "
                        f"complex, got {x.dtype}; convert it first, e.g. x.float()")


def forward_difference(x: Tensor, dim: int, *, absolute: bool = False) -> Tensor:
    """``d[i] = x[i+1] - x[i]`` for ``i < N-1`` and ``d[N-1] = 0`` along ``dim``.

    ``absolute=True`` applies ``|D|`` instead: ``d[i] = x[i+1] + x[i]`` (same zero last entry).
    """
    _check_dtype(x, "forward_difference")
    d = torch.zeros_like(x)
    n = x.shape[dim]
    nxt, cur = x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1)
    d.narrow(dim, 0, n - 1).copy_(nxt + cur if absolute else nxt - cur)
    return d


def forward_difference_adjoint(d: Tensor, dim: int, *, absolute: bool = False) -> Tensor:
    """Adjoint of :func:`forward_difference`: ``x[i] = d[i-1] - d[i]`` with the boundary rows
    (``absolute=True``: ``|D|^T``, ``x[i] = d[i-1] + d[i]``)."""
    _check_dtype(d, "forward_difference_adjoint")
    n = d.shape[dim]
    x = torch.zeros_like(d)
    inner = d.narrow(dim, 0, n - 1)
    if absolute:
        x.narrow(dim, 0, n - 1).add_(inner)
    else:
        x.narrow(dim, 0, n - 1).sub_(inner)
    x.narrow(dim, 1, n - 1).add_(inner)
    return x
