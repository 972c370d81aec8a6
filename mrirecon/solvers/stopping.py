"""Relative-change stopping tests of the iterative solvers, per independent system.

A batch of slices solved together converges when its slowest slice has: one norm over the
whole batch lets a bright slice stop a dim one early (``sirt`` with a 100x brighter slice beside
it stopped a slice after 15 of its 93 iterations).
"""

from __future__ import annotations

import torch
from torch import Tensor


def per_system_ratio(num: Tensor, den: Tensor, batch: int = 0) -> float:
    """The largest ``||num_b|| / ||den_b||`` over the ``batch`` leading axes (one ratio of the
    whole tensors when ``batch`` is 0); a system with ``||den_b|| = 0`` counts ``||num_b||``."""
    if batch == 0:
        change = float(torch.linalg.vector_norm(num))
        scale = float(torch.linalg.vector_norm(den))
        return change / scale if scale > 0 else change
    dims = tuple(range(batch, num.ndim))
    change = torch.linalg.vector_norm(num, dim=dims)
    scale = torch.linalg.vector_norm(den, dim=tuple(range(batch, den.ndim)))
    return float(torch.where(scale > 0, change / torch.where(scale > 0, scale, 1), change).max())


__all__ = ["per_system_ratio"]
