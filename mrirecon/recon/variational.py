"""Total-variation regularised least squares, shared by the MRI and CT reconstructions.

Solves ``min_x 1/2 ||A x - y||^2 + lam TV(x)`` (optionally with ``x >= 0``), where ``TV`` is
isotropic total variation over the last two axes,
``TV(x) = sum_pixels sqrt(|D_row x|^2 + |D_col x|^2)`` (forward differences, Neumann
boundary, complex modulus for complex images).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import check_iterations, check_start
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.operators import FiniteDifference
from mrirecon.solvers import (
    admm,
    diagonal_preconditioners,
    group_soft_threshold,
    least_squares_x_update,
    max_eigenvalue,
    pdhg,
    project_group_l2_ball,
    project_nonnegative,
)

#: ``||D||`` for 2-D forward differences is below ``sqrt(8)``.
FINITE_DIFFERENCE_NORM = math.sqrt(8.0)
METHODS = ("pdhg", "admm")


class GradientAndImage(LinearOperator):
    """``x -> (D_row x, D_col x, x)`` on axis ``-3``: TV's gradient and a copy of the image, the
    split of ADMM for TV with ``x >= 0`` (``K^H K = D^H D + I``)."""

    def __init__(self) -> None:
        super().__init__((None, None), (3, None, None))
        self.D = FiniteDifference(2)

    def _forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.D(x), x.unsqueeze(-3)], dim=-3)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.D.H(y[..., :2, :, :]) + y[..., 2, :, :]

    def _gram(self, x: Tensor) -> Tensor:
        return self.D.gram(x) + x


def batch_dims_of(op: LinearOperator, x: Tensor) -> int:
    """Number of leading axes of the image ``x`` that are not part of ``op``'s domain."""
    if op.domain_shape is None:
        return 0
    return max(x.ndim - len(op.domain_shape), 0)


def admm_settings(who: str, rho: float | None, cg_iterations: int | None, default_rho: float,
                  default_cg_iterations: int, iterations: int) -> tuple[float, int]:
    """``(rho, cg_iterations)`` of an ADMM solve with CG x-updates (``tv``, ``tv_ct``, ``tgv``):
    ``None`` takes the caller's default; both checked, the errors under ``who``'s name."""
    rho = default_rho if rho is None else rho
    cg_iterations = default_cg_iterations if cg_iterations is None else cg_iterations
    if not rho > 0:
        raise ValueError(f"{who}: rho must be > 0, got {rho}")
    check_iterations(who, iterations=iterations, cg_iterations=cg_iterations)
    return rho, cg_iterations


class _BatchedOperator(Exception):
    """``op.gram`` of one image came back with leading axes: the operator holds a batch."""


def relative_penalty(op: LinearOperator, image: Tensor, batch_dims: int,
                     rho: float) -> float | Tensor:
    """The ADMM penalty ``rho ||A||^2`` for a ``rho`` relative to ``||A||^2``, so every slice of
    a batch gets the penalty it gets alone (with per-slice maps exactly as with its own
    ``(1, C, H, W)`` maps; with its ``(C, H, W)`` maps to the shared path's tolerance, 1e-3).

    An operator that acts alike on every slice (shared coil maps, a CT projector): 20
    power-iteration steps (relative tolerance 1e-3) on one image of the shape of ``image`` (the
    first of its ``batch_dims`` leading axes); a number. An operator with a batch of its own
    (per-slice coil maps ``(B, C, H, W)``): 20 steps per slice, each from the start vector one
    slice alone gets, so a tensor of shape ``image.shape[:batch_dims]`` (one penalty per slice,
    :func:`~mrirecon.solvers.admm` takes it). Was: the per-slice case failed with "only one
    element tensors can be converted to Python scalars"."""
    one = torch.zeros_like(image[(0,) * batch_dims])

    def gram_of_one(v: Tensor) -> Tensor:
        out = op.gram(v)
        if out.shape != v.shape:
            raise _BatchedOperator
        return out

    try:
        return rho * float(max_eigenvalue(gram_of_one, one, iterations=20, tolerance=1e-3))
    except _BatchedOperator:
        pass
    eig = max_eigenvalue(op.gram, image, batch_dims=batch_dims, iterations=20)
    return rho * eig.reshape(image.shape[:batch_dims])


def tv_objective(y: Tensor, op: LinearOperator, x: Tensor, lam: float) -> Tensor:
    """``1/2 ||A x - y||^2 + lam TV(x)`` (all batch items summed); for monitoring and tests."""
    g = FiniteDifference(2)(x)
    data = 0.5 * (op(x) - y).abs().pow(2).sum()
    return data + lam * torch.linalg.vector_norm(g, dim=-3).sum()


@accepts_deprecated_names
def tv_least_squares(
    y: Tensor,
    op: LinearOperator,
    lam: float,
    *,
    method: str = "pdhg",
    nonneg: bool = False,
    preconditioned: bool = False,
    iterations: int = 100,
    tolerance: float = 0.0,
    rho: float = 1.0,
    rho_relative: bool = False,
    cg_iterations: int = 5,
    x0: Tensor | None = None,
    callback: Callable[[int, Tensor, float], None] | None = None,
    who: str = "tv_least_squares",
) -> Tensor:
    """Minimise ``1/2 ||A x - y||^2 + lam TV(x)`` (+ ``x >= 0`` when ``nonneg``).

    Parameters
    ----------
    y
        Measurements in the range of ``op`` (leading axes are independent slices).
    op
        Forward operator ``A`` on images ``(..., H, W)``.
    lam
        TV weight (absolute, in the units of ``y``).
    method
        ``"pdhg"``: Chambolle-Pock on the blocks ``[A, D]``; ``"admm"``: ADMM with ``z = D x``
        and ``cg_iterations`` of CG on ``A^H A + rho D^H D`` per x-update (with ``nonneg``
        also ``w = x``, projected onto ``x >= 0``: CG on ``A^H A + rho (D^H D + I)``).
    nonneg
        Constrain ``x >= 0`` (real images only). ADMM returns its x-iterate projected onto
        the constraint (equal to it at convergence).
    preconditioned
        PDHG with Pock-Chambolle diagonal steps (for non-negative ``A`` such as CT
        projectors); otherwise scalar steps from ``||A||`` (power iteration per batch item is
        reduced to the largest).
    iterations, tolerance, callback
        Passed to the solver.
    rho, cg_iterations
        ADMM penalty and inner CG iterations.
    rho_relative
        ``rho`` in units of ``||A||^2`` (:func:`relative_penalty`: every slice of a batch gets
        the penalty it gets alone, also with an operator of per-slice coil maps).
    x0
        Start image (zeros by default).
    who
        The name a start image of the wrong shape is refused under (the public caller's).

    Returns
    -------
    Tensor
        The image ``(..., H, W)``.
    """
    if method not in METHODS:
        raise ValueError(f"tv: unknown method {method!r}; valid: {', '.join(METHODS)}")
    aty = op.H(y)
    if nonneg and aty.is_complex():
        raise ValueError("tv: nonneg=True needs a real-valued operator (CT), got complex images")
    x0 = check_start(who, x0, aty, y)
    x0 = torch.zeros_like(aty) if x0 is None else x0
    D = FiniteDifference(2)
    nb = batch_dims_of(op, aty)
    if method == "admm":
        if rho_relative:
            rho = relative_penalty(op, aty, nb, rho)
        K = GradientAndImage() if nonneg else D

        def prox(v: Tensor, t: float) -> Tensor:
            if not nonneg:
                return group_soft_threshold(v, lam * t, dim=-3)
            return torch.cat([group_soft_threshold(v[..., :2, :, :], lam * t, dim=-3),
                              project_nonnegative(v[..., 2:, :, :])], dim=-3)

        x = admm(least_squares_x_update(op, y, K, cg_iterations=cg_iterations, batch_dims=nb),
                 prox, K, x0, rho, iterations=iterations, tolerance=tolerance, batch_dims=nb,
                 callback=callback)
        return project_nonnegative(x) if nonneg else x
    prox_data = (lambda p, s: (p - s * y) / (1 + s))  # conjugate of 1/2||. - y||^2
    prox_tv = (lambda p, s: project_group_l2_ball(p, lam, dim=-3))  # conjugate of lam ||.||_2,1
    prox_g = (lambda v, t: project_nonnegative(v)) if nonneg else None
    if preconditioned:
        abs_d = FiniteDifference(2, absolute=True)  # |D| for the row/column sums
        sigmas, tau = diagonal_preconditioners([op, D], x0, [op, abs_d])
        return pdhg([op, D], [prox_data, prox_tv], prox_g, x0, sigmas, tau,
                    iterations=iterations, tolerance=tolerance, batch_dims=nb, callback=callback)
    norm_a = float(max_eigenvalue(op.gram, x0, batch_dims=nb).max()) ** 0.5
    return pdhg([op, D], [prox_data, prox_tv], prox_g, x0, norms=[norm_a, FINITE_DIFFERENCE_NORM],
                iterations=iterations, tolerance=tolerance, batch_dims=nb, callback=callback)
