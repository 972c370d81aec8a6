"""Conjugate gradient for Hermitian positive (semi-)definite systems ``A x = b``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _dot(a: Tensor, b: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    """Real part of ``<a, b>`` summed over ``dims`` (all when ``None``), keeping dims."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    if dims is None:
        return prod.sum()
    return prod.sum(dim=dims, keepdim=True)


def cg(
    gram: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    *,
    max_iterations: int = 10,
    tolerance: float = 0.0,
    batch_dims: int = 0,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Solve ``gram(x) = rhs`` by conjugate gradients.

    Parameters
    ----------
    gram
        Hermitian positive-definite linear map (e.g. ``A.gram`` plus ``lambda * I``).
    rhs
        Right-hand side; defines shape, dtype and device.
    x0
        Starting point (zeros by default).
    max_iterations
        Iteration limit.
    tolerance
        Stop when ``||r|| <= tolerance * ||rhs||`` (for every batch item).
    batch_dims
        Number of leading axes holding independent systems (each gets its own step sizes).
        ``0`` treats the whole tensor as one system.
    callback
        Called as ``callback(iteration, x, residual_norm)`` after each iteration.

    Returns
    -------
    Tensor
        The approximate solution.
    """
    dims = None if batch_dims == 0 else tuple(range(batch_dims, rhs.ndim))
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - gram(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = _dot(r, r, dims)
    bb = _dot(rhs, rhs, dims)
    threshold = (tolerance**2) * bb
    for it in range(max_iterations):
        if tolerance > 0 and bool(torch.all(rr <= threshold)):
            break
        ap = gram(p)
        pap = _dot(p, ap, dims)
        alpha = torch.where(pap > 0, rr / torch.where(pap > 0, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r, dims)
        beta = torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
        if callback is not None:
            callback(it, x, torch.sqrt(rr))
    return x
