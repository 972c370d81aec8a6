"""Largest eigenvalue of a Hermitian positive semi-definite map, per batch item."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


@torch.no_grad()
def max_eigenvalue(
    gram: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    batch_dims: int = 0,
    max_iterations: int = 30,
    tolerance: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Power iteration for ``lambda_max(gram)`` (``= ||A||^2`` for ``gram = A^H A``).

    Unlike :meth:`~mrirecon.core.LinearOperator.operator_norm`, each of the leading
    ``batch_dims`` axes is an independent system (a slice with its own coil maps), so step sizes
    derived from the result make a batched reconstruction equal to slice-by-slice ones.

    Parameters
    ----------
    gram
        Hermitian positive semi-definite linear map acting on tensors shaped like ``x0``.
    x0
        Domain tensor; only shape, dtype and device are used (the start vector is random).
    batch_dims
        Number of leading independent axes.
    max_iterations, tolerance
        Stop after ``max_iterations`` or when every estimate changes by less than
        ``tolerance`` (relative).
    generator
        Random generator for the start vector (seed 0 on ``x0``'s device by default).

    Returns
    -------
    Tensor
        Real tensor of shape ``x0.shape[:batch_dims] + (1,) * (x0.ndim - batch_dims)`` (ready to
        broadcast against ``x0``).
    """
    if generator is None:
        generator = torch.Generator(device=x0.device).manual_seed(0)
    dims = tuple(range(batch_dims, x0.ndim))
    x = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)

    def norm(v: Tensor) -> Tensor:
        return torch.linalg.vector_norm(v, dim=dims, keepdim=True) if dims else v.abs()

    x = x / norm(x)
    estimate = torch.zeros_like(norm(x))
    for _ in range(max_iterations):
        z = gram(x)
        new = norm(z)
        x = z / torch.where(new > 0, new, torch.ones_like(new))
        done = tolerance > 0 and bool(torch.all(torch.abs(new - estimate) <= tolerance * new))
        estimate = new
        if done:
            break
    return estimate
