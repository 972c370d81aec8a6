"""Relative-change stopping tests of the iterative solvers, per independent system, the
check of their starting point and of their iterates (:func:`check_finite_iterate`).

A batch of slices solved together converges when its slowest slice has: one norm over the
whole batch lets a bright slice stop a dim one early (``sirt`` with a 100x brighter slice beside
it stopped a slice after 15 of its 93 iterations).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core.checks import NonFiniteError, finite_and_nonzero, nonfinite_count

#: Iterations between two checks that an iterate is finite, where a solver computes no relative
#: change (no tolerance, no callback: the pipelines' fixed iteration counts): one pass over the
#: iterate and one device sync each. Where the relative change is computed, every iteration
#: is checked for free (a NaN or Inf iterate makes it NaN).
FINITE_CHECK_EVERY = 10


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


def check_finite_iterate(who: str, it: int, iterations: int, x: Tensor, rel: float | None,
                         cause: Callable[[], str]) -> None:
    """Raise :class:`~mrirecon.core.checks.NonFiniteError` when the iterate ``x`` of iteration
    ``it`` (0-based, of ``iterations``) holds NaN or Inf, naming the iteration and ``cause()``
    (what likely diverged: the step; built only then). Checked whenever the relative change ``rel`` was
    computed (a non-finite ``rel``, confirmed on ``x``), else (``rel`` is ``None``) every
    :data:`FINITE_CHECK_EVERY` iterations and at the last one (a run ending between two checks
    returned its NaN iterate without an error). A diverging ``fista`` (a step 100x above ``1/L``)
    was NaN from iteration 17 and ran all 400 of its iterations on NaN (with a tolerance, a
    NaN relative change never stopped it) before ``recon.run`` refused the image."""
    if rel is not None:
        if math.isfinite(rel):
            return
    elif (it + 1) % FINITE_CHECK_EVERY and it + 1 < iterations:  # the last one is checked
        return
    if bool(torch.isfinite(x).all()):  # one device sync
        return
    when = (f"at iteration {it + 1} of {iterations}" if rel is not None else
            f"by iteration {it + 1} of {iterations} (checked every {FINITE_CHECK_EVERY})")
    raise NonFiniteError(f"{who}: the iterate holds {nonfinite_count(x)} NaN or Inf values "
                         f"(of {x.numel()}) {when}: {cause()}")


def describe(value: float | Tensor) -> str:
    """A step or penalty for a message: ``100``, or ``up to 100`` for a tensor of several."""
    if isinstance(value, Tensor):
        v = value.detach()
        if v.numel() == 1:
            return f"{float(v.abs().reshape(())):g}"
        return f"up to {float(v.abs().max()):g}"
    return f"{float(value):g}"


__all__ = ["FINITE_CHECK_EVERY", "check_finite_iterate", "check_finite_start", "describe",
           "per_system_ratio"]
