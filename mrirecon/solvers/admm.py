"""ADMM for ``min_x f(x) + g(K x)`` (scaled form, Boyd et al. 2011, section 3.1.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import check_iterations, check_tolerance, start_at
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.solvers.cg import cg
from mrirecon.solvers.convergence import quiet, report_unconverged
from mrirecon.solvers.prox import Prox
from mrirecon.solvers.stopping import check_finite_iterate, check_finite_start, describe

XUpdate = Callable[[Tensor, "float | Tensor", Tensor], Tensor]


@accepts_deprecated_names
def admm(
    x_update: XUpdate,
    prox_g: Prox,
    K: LinearOperator | Callable[[Tensor], Tensor],
    x0: Tensor,
    rho: float | Tensor = 1.0,
    *,
    z0: Tensor | None = None,
    iterations: int = 50,
    tolerance: float = 0.0,
    batch_dims: int = 0,
    callback: Callable[[int, Tensor, float], None] | None = None,
) -> Tensor:
    """Alternating direction method of multipliers with the splitting ``z = K x``.

    Each iteration:

    * ``x <- argmin_x f(x) + rho/2 ||K x - (z - u)||^2`` by ``x_update(z - u, rho, x)``,
    * ``z <- prox_{g/rho}(K x + u)`` by ``prox_g(K x + u, 1 / rho)``,
    * ``u <- u + K x - z`` (scaled dual variable).

    Parameters
    ----------
    x_update
        ``x_update(v, rho, x_prev)`` returning (an approximation of)
        ``argmin_x f(x) + rho/2 ||K x - v||^2``; ``x_prev`` is a warm start. For
        ``f = 1/2||A x - y||^2`` use :func:`least_squares_x_update` (CG on
        ``A^H A + rho K^H K``).
    prox_g
        ``prox_g(v, t) = prox_{t g}(v)``.
    K
        The splitting operator (a :class:`LinearOperator` or any linear callable).
    x0
        Starting point.
    rho
        Penalty parameter ``> 0``: a number, or a tensor of one penalty per problem (shape
        ``x0.shape[:batch_dims]``, e.g. a penalty relative to each slice's ``||A||^2``), which
        ``x_update`` receives shaped to broadcast against ``x`` and ``prox_g``'s step against
        ``K x``.
    z0
        Starting split variable (``K x0`` by default): the shape of ``K(x0)``, or one that
        broadcasts to it; the scaled dual starts at zero.
    iterations
        Iteration limit.
    tolerance
        Stop when the primal residual ``||K x - z||`` and the change of ``z`` both drop below
        ``tolerance`` times ``max(||K x||, ||z||)`` (``0`` disables; ``< 1``). Stopping at
        ``iterations`` above it is reported (:mod:`mrirecon.solvers.convergence`).
    batch_dims
        Leading axes of ``x`` (and of ``K x``) that index independent problems: the tolerance
        then holds for each of them (the slowest decides).
    callback
        ``callback(iteration, x, primal_residual)`` after each iteration.

    Returns
    -------
    Tensor
        The last ``x``.

    Raises
    ------
    NonFiniteError
        At the first ``x`` holding NaN or Inf (checked every iteration where the residual is
        computed, else every :data:`~mrirecon.solvers.stopping.FINITE_CHECK_EVERY`).
    """
    check_iterations("admm", iterations=iterations)
    check_tolerance("admm", tolerance=tolerance)
    check_finite_start("admm", x0)  # every iterate was NaN, without a word
    x = x0.clone()
    kx = K(x)
    rho_x, rho_z = _penalties(rho, x, kx, batch_dims)
    # a z0 of another shape failed on torch's "The size of tensor a (32) must match ..."
    z = kx.clone() if z0 is None else start_at("admm", "z0", z0, tuple(kx.shape), "K(x0)")
    u = torch.zeros_like(z)

    def diverged() -> str:
        return (f"from x_update or prox_g (rho {describe(rho)}): an x-update or prox that "
                "returns NaN or Inf (a non-convex prox, NaN in an operator) makes every later "
                "iterate NaN")

    for it in range(iterations):
        x = x_update(z - u, rho_x, x)
        kx = K(x)
        z_old = z
        z = prox_g(kx + u, 1.0 / rho_z)
        r = kx - z
        u = u + r
        if tolerance > 0 or callback is not None:
            # per problem: ||K x||, ||z|| and both residuals over the non-batch axes
            scale = torch.maximum(_norms(kx, batch_dims), _norms(z, batch_dims))
            primal, dual = _norms(r, batch_dims), _norms(z - z_old, batch_dims)
            ok = scale > 0
            rel = float(torch.where(ok, primal / torch.where(ok, scale, 1), primal).max())
            if callback is not None:
                callback(it, x, rel)
            check_finite_iterate("admm", it, iterations, x, rel, diverged)
            # a problem whose K x and z are exactly 0 is solved once z stops moving (was: never
            # stopped, 300 iterations and "residual 0, above its tolerance" for a zero slice)
            worst_res = torch.maximum(primal, dual)
            if tolerance > 0 and bool(torch.where(ok, worst_res <= tolerance * scale,
                                                  worst_res == 0).all()):
                break
        else:
            check_finite_iterate("admm", it, iterations, x, None, diverged)
    else:
        if tolerance > 0:
            worst = torch.where(ok, worst_res / torch.where(ok, scale, 1), worst_res)
            report_unconverged("admm", iterations, float(worst.max()), tolerance,
                               "primal residual or change of z (relative to ||K x||)")
    return x


def _penalties(rho: float | Tensor, x: Tensor, kx: Tensor, batch: int) -> tuple:
    """``rho`` checked, as it multiplies ``x`` (the x-update) and ``K x`` (the prox's step): a
    number as it is, a per-problem tensor shaped ``batch`` axes + ones."""
    if not isinstance(rho, Tensor):
        if not rho > 0:
            raise ValueError(f"admm: rho must be > 0, got {rho}")
        return rho, rho
    r = rho.detach()
    if r.is_complex() or r.numel() == 0 or not bool((torch.isfinite(r) & (r > 0)).all()):
        raise ValueError(f"admm: rho must be finite and > 0 (every entry of a per-problem "
                         f"tensor), got a tensor of shape {tuple(r.shape)}")
    if r.ndim > batch:
        raise ValueError(f"admm: a tensor rho holds one penalty per problem: shape "
                         f"{tuple(x.shape[:batch])} (batch_dims={batch}), got {tuple(r.shape)}")
    lead = (1,) * (batch - rho.ndim) + tuple(rho.shape)
    return (rho.reshape(lead + (1,) * (x.ndim - batch)).to(x.real.dtype),
            rho.reshape(lead + (1,) * (kx.ndim - batch)).to(kx.real.dtype))


def _norms(v: Tensor, batch: int) -> Tensor:
    """``||v_b||`` over the axes after the ``batch`` leading ones (a 0-d tensor for 0)."""
    return torch.linalg.vector_norm(v, dim=tuple(range(batch, v.ndim)))


def least_squares_x_update(
    A: LinearOperator,
    y: Tensor,
    K: LinearOperator,
    *,
    cg_iterations: int = 5,
    cg_tolerance: float = 0.0,
    batch_dims: int = 0,
) -> XUpdate:
    """The ADMM x-update for ``f(x) = 1/2 ||A x - y||^2``.

    Returns a callable ``(v, rho, x_prev) -> x`` that solves
    ``(A^H A + rho K^H K) x = A^H y + rho K^H v`` by ``cg_iterations`` of CG warm-started at
    ``x_prev`` (``A^H y`` is computed once).

    Parameters
    ----------
    A, y
        Data-fidelity operator and measurements.
    K
        The ADMM splitting operator.
    cg_iterations, cg_tolerance, batch_dims
        Passed to :func:`~mrirecon.solvers.cg.cg`.
    """
    aty = A.H(y)

    def update(v: Tensor, rho: float | Tensor, x_prev: Tensor) -> Tensor:
        rhs = aty + rho * K.H(v)
        with quiet():  # an inexact x-update is ADMM's design: its outer tolerance is reported
            return cg(
                lambda x: A.gram(x) + rho * K.gram(x),
                rhs,
                x_prev,
                iterations=cg_iterations,
                tolerance=cg_tolerance,
                batch_dims=batch_dims,
            )

    return update
