"""Power iteration: the one home of ``lambda_max(A^H A)`` and ``||A||_2`` estimates.

Two quantities, two names:

* :func:`max_eigenvalue` returns ``lambda_max`` of a Hermitian positive semi-definite map; for
  ``gram = A^H A`` that is ``||A||_2^2 = sigma_max^2`` (the Lipschitz constant of the gradient
  of ``1/2 ||A x - y||^2``, what step sizes need);
* :meth:`LinearOperator.operator_norm <mrirecon.core.LinearOperator.operator_norm>` returns
  ``||A||_2 = sigma_max``, the square root of the former on ``A.gram``.

The start vector is drawn from a seeded generator (seed 0 on ``x0``'s device unless one is
passed), never from torch's global random state, so results are reproducible and calling them
does not shift other code's random numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core.magnitude import sum_abs2
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.checks import check_iterations


@accepts_deprecated_names
def max_eigenvalue(
    gram: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    batch_dims: int = 0,
    iterations: int = 30,
    tolerance: float = 0.0,
    generator: torch.Generator | None = None,
    differentiable: bool = False,
) -> Tensor:
    """Power iteration for ``lambda_max(gram)`` (``= ||A||_2^2`` for ``gram = A^H A``).

    Each of the leading ``batch_dims`` axes is an independent system (a slice with its own coil
    maps), started from the vector one item alone is started from, so step sizes derived from the
    result make a batched reconstruction equal to slice-by-slice ones; ``batch_dims = 0`` treats
    the whole tensor as one vector. With a ``tolerance``, every item iterates until the slowest
    has converged.

    Parameters
    ----------
    gram
        Hermitian positive semi-definite linear map acting on tensors shaped like ``x0``.
    x0
        Domain tensor; only shape, dtype and device are used (the start vector is random).
    batch_dims
        Number of leading independent axes.
    iterations, tolerance
        Stop after ``iterations`` or when every estimate changes by less than ``tolerance``
        (relative; ``0`` runs all iterations).
    generator
        Random generator for the start vector (seed 0 on ``x0``'s device by default).
    differentiable
        ``False`` (default): run under ``torch.no_grad`` (a step size for a solver).
        ``True``: record the iterations when grad mode is on, so the estimate is differentiable
        in the tensors ``gram`` holds (coil maps that require a gradient): autograd gives the
        derivative of the ``iterations`` steps taken, which costs the memory of that many
        ``gram`` applications. The values are the same either way.

    Returns
    -------
    Tensor
        Real tensor of shape ``x0.shape[:batch_dims] + (1,) * (x0.ndim - batch_dims)`` (ready to
        broadcast against ``x0``); for ``batch_dims = 0`` all ``x0.ndim`` axes have size 1.
    """
    check_iterations("max_eigenvalue", iterations=iterations)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        return _power_iteration(gram, x0, batch_dims, iterations, tolerance, generator)


def _power_iteration(gram: Callable[[Tensor], Tensor], x0: Tensor, batch_dims: int,
                     iterations: int, tolerance: float,
                     generator: torch.Generator | None) -> Tensor:
    if generator is None:
        generator = torch.Generator(device=x0.device).manual_seed(0)
    dims = tuple(range(batch_dims, x0.ndim))
    # one item's start vector, the same for every item: a batch gets each item's figure alone
    # (each item drew its own and a slice took 31.8 in a batch where it has 35.7 alone)
    one = (1,) * batch_dims + tuple(x0.shape[batch_dims:])
    x = torch.randn(one, dtype=x0.dtype, device=x0.device,
                    generator=generator).expand(x0.shape).contiguous()

    def norm(v: Tensor) -> Tensor:
        if not dims:
            return v.abs()
        if v.is_complex():  # without the slow complex modulus (mrirecon.core.magnitude)
            return sum_abs2(v, dims, keepdim=True).sqrt()
        return torch.linalg.vector_norm(v, dim=dims, keepdim=True)

    x = x / norm(x)
    estimate = torch.zeros_like(norm(x))
    for _ in range(iterations):
        z = gram(x)
        new = norm(z)
        x = z / torch.where(new > 0, new, torch.ones_like(new))
        done = tolerance > 0 and bool(torch.all(torch.abs(new - estimate) <= tolerance * new))
        estimate = new
        if done:
            break
    return estimate
