"""Relative-change stopping tests of the iterative solvers, per independent system, and the
check of their starting point.

A batch of slices solved together converges when its slowest slice has: one norm over the
whole batch lets a bright slice stop a dim one early (``sirt`` with a 100x brighter slice beside
it stopped a slice after 15 of its 93 iterations).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.core.checks import finite_and_nonzero, nonfinite_count


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


def check_finite_start(who: str, x0: Tensor) -> None:
    """Refuse a start ``x0`` holding NaN or Inf (one pass over it, before the first iteration):
    ``fista`` and ``admm`` returned all-NaN iterates from it, ``pdhg`` an image of zeros, without
    a word (``cg`` names such a start by its residual). A start that is no tensor (a numpy
    array) is refused by its type: it failed on "object has no attribute 'clone'"."""
    if not isinstance(x0, Tensor):
        raise TypeError(f"{who}: x0 must be a torch.Tensor, got {type(x0).__name__}")
    if not finite_and_nonzero(x0)[0]:
        bad = nonfinite_count(x0)
        raise ValueError(f"{who}: x0 holds {bad} NaN or Inf values")


__all__ = ["check_finite_start", "per_system_ratio"]
