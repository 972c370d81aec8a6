"""Primal-dual hybrid gradient (Chambolle & Pock 2011) for ``min_x f(K x) + g(x)``."""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mrirecon.core import LinearOperator, max_eigenvalue
from mrirecon.core.checks import check_iterations, check_tolerance, start_at
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.solvers.convergence import report_unconverged
from mrirecon.solvers.prox import Prox
from mrirecon.solvers.stopping import (check_finite_iterate, check_finite_start, describe,
                                       per_system_ratio)

#: safety factor on the step condition (power iteration approaches the norm from below)
STEP_SAFETY = 0.99


def _as_list(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"pdhg: {what} has {len(value)} entries for {n} operator blocks")
        return list(value)
    return [value] * n


def _weighted_gram_norm(ops: list[LinearOperator], weights: list[float], x0: Tensor,
                        norms: list[float] | None) -> float:
    """``||sum_i w_i K_i^H K_i||_2``: exact by power iteration, or bounded by given norms."""
    if norms is not None:
        return sum(w * n * n for w, n in zip(weights, norms))
    def gram(x: Tensor) -> Tensor:
        out = weights[0] * ops[0].gram(x)
        for w, k in zip(weights[1:], ops[1:]):
            out = out + w * k.gram(x)
        return out
    # the sum is Hermitian positive semi-definite: its norm is its largest eigenvalue
    return float(max_eigenvalue(gram, x0, iterations=100, tolerance=1e-5).max())


def pdhg_step_sizes(
    K: LinearOperator | Sequence[LinearOperator],
    x0: Tensor,
    sigma: float | Sequence[float] | None = None,
    tau: float | None = None,
    *,
    norms: float | Sequence[float] | None = None,
) -> tuple[list[float], float]:
    """Dual steps ``sigma_i`` (one per block) and primal step ``tau`` meeting the condition.

    The condition for convergence with ``theta = 1`` is ``tau ||sum_i sigma_i K_i^H K_i|| < 1``
    (``tau sigma ||K||^2 < 1`` for one block). Missing steps are chosen as ``sigma_i =
    1 / ||K_i||`` and ``tau = 0.99 / ||sum_i sigma_i K_i^H K_i||``; given ones are checked.

    Parameters
    ----------
    K
        One operator or a list of blocks ``[K_1, K_2, ...]`` (``K x = (K_1 x, K_2 x, ...)``).
    x0
        A domain tensor for the power iterations (shape, dtype and device only).
    sigma, tau
        Steps to use or check.
    norms
        Known ``||K_i||`` (skips power iterations; bounds the block sum by the triangle
        inequality).

    Raises
    ------
    ValueError
        If given steps violate the condition.
    """
    ops = [K] if isinstance(K, LinearOperator) else list(K)
    n = len(ops)
    norm_list = None if norms is None else [float(v) for v in _as_list(norms, n, "norms")]

    def block_norm(i: int) -> float:
        if norm_list is not None:
            return norm_list[i]
        return _weighted_gram_norm([ops[i]], [1.0], x0, None) ** 0.5

    if sigma is None and tau is None:
        sigmas = [1.0 / max(block_norm(i), 1e-30) for i in range(n)]
    elif sigma is None:
        total = _weighted_gram_norm(ops, [1.0] * n, x0, norm_list)
        sigmas = [STEP_SAFETY / (tau * total)] * n
        return sigmas, float(tau)
    else:
        sigmas = [float(s) for s in _as_list(sigma, n, "sigma")]
    if min(sigmas) <= 0:
        raise ValueError(f"pdhg: sigma must be > 0, got {sigmas}")
    bound = _weighted_gram_norm(ops, sigmas, x0, norm_list)
    if tau is None:
        return sigmas, STEP_SAFETY / max(bound, 1e-30)
    if not tau > 0 or tau * bound >= 1.0 + 1e-6:
        names = ", ".join(k.name for k in ops)
        advice = f"tau <= {_rounded_down(1 / bound)}" if bound > 0 else "a tau > 0"
        raise ValueError(
            f"pdhg: step sizes tau={tau:g}, sigma={sigmas} violate tau*||sum sigma_i K_i^H K_i|| "
            f"< 1 for K=[{names}] (got {tau * bound:.4g}); use {advice}"
        )
    return sigmas, float(tau)


def _rounded_down(value: float, digits: int = 4) -> str:
    """``value`` (> 0) printed with ``digits`` significant digits, rounded down: the advised
    ``tau`` must pass the check it was printed by (``:.4g`` rounded to nearest and printed a
    value above the bound in 20 of 40 random cases, refused in turn)."""
    if not math.isfinite(value) or value <= 0:
        return f"{value:g}"
    # exact: the binary value's decimal expansion floored; as a float it rounds to at most
    # value, and printed to ``digits`` digits it reads back as that float
    floor = decimal.Context(prec=digits, rounding=decimal.ROUND_FLOOR).create_decimal(value)
    return f"{float(floor):.{digits}g}"


def diagonal_preconditioners(
    K: Sequence[LinearOperator], x0: Tensor, abs_ops: Sequence[LinearOperator] | None = None
) -> tuple[list[Tensor], Tensor]:
    """Pock & Chambolle (2011) diagonal steps (``alpha = 1``) for operators with known ``|K|``.

    ``sigma_i = 1 / (|K_i| 1)`` (row sums) and ``tau = 1 / sum_i |K_i|^T 1`` (column sums),
    which satisfy the convergence condition by construction. ``|K|`` is the element-wise
    absolute value of the matrix; for a non-negative operator (a CT projector) it is ``K``
    itself, which is the default when ``abs_ops`` is not given.

    Parameters
    ----------
    K
        Operator blocks.
    x0
        Domain tensor (shape, dtype, device).
    abs_ops
        Operators applying ``|K_i|`` (e.g. for finite differences, ``|D|``).

    Returns
    -------
    sigmas, tau
        Tensors shaped like each block's range and like ``x0``; zero rows/columns get step 0.
    """
    abs_ops = list(K) if abs_ops is None else list(abs_ops)
    ones = torch.ones_like(x0)
    sigmas = []
    col = torch.zeros_like(x0)
    for k in abs_ops:
        row = k(ones)
        sigmas.append(torch.where(row.abs() > 0, 1.0 / torch.where(row.abs() > 0, row.abs(),
                                                                     torch.ones_like(row.abs())), 0))
        col = col + k.H(torch.ones_like(row)).abs()
    tau = torch.where(col > 0, 1.0 / torch.where(col > 0, col, torch.ones_like(col)), 0)
    return [s.to(x0.real.dtype) for s in sigmas], tau.to(x0.real.dtype)


def _steps(ops, x0, sigma, tau, norms):
    tensors = isinstance(tau, Tensor) or any(
        isinstance(s, Tensor) for s in (sigma if isinstance(sigma, (list, tuple)) else [sigma])
    )
    if not tensors:
        return pdhg_step_sizes(ops, x0, sigma, tau, norms=norms)
    if sigma is None or tau is None:
        raise ValueError("pdhg: diagonal (tensor) steps need both sigma and tau")
    return _as_list(sigma, len(ops), "sigma"), tau


@accepts_deprecated_names
def pdhg(
    K: LinearOperator | Sequence[LinearOperator],
    prox_f_conj: Prox | Sequence[Prox],
    prox_g: Prox | None,
    x0: Tensor,
    sigma: float | Sequence[float] | None = None,
    tau: float | None = None,
    theta: float = 1.0,
    *,
    y0: Sequence[Tensor] | Tensor | None = None,
    norms: float | Sequence[float] | None = None,
    iterations: int = 100,
    tolerance: float = 0.0,
    batch_dims: int = 0,
    callback: Callable[[int, Tensor, float], None] | None = None,
) -> Tensor:
    """Chambolle-Pock primal-dual algorithm.

    Solves ``min_x sum_i f_i(K_i x) + g(x)`` by

    * ``y_i <- prox_{sigma_i f_i*}(y_i + sigma_i K_i xbar)``,
    * ``x_new <- prox_{tau g}(x - tau sum_i K_i^H y_i)``,
    * ``xbar <- x_new + theta (x_new - x)``.

    Parameters
    ----------
    K
        A :class:`LinearOperator` or a list of blocks (a separable ``f``, e.g. data term and
        TV: ``[A, FiniteDifference(2)]``).
    prox_f_conj
        ``prox_f_conj(v, s) = prox_{s f*}(v)`` (one per block); build them from a prox of
        ``f`` with :func:`~mrirecon.solvers.prox.conjugate_prox` if needed.
    prox_g
        ``prox_g(v, t) = prox_{t g}(v)``; ``None`` for ``g = 0``.
    x0
        Starting point.
    sigma, tau
        Dual and primal steps; missing ones follow from ``K.operator_norm`` (see
        :func:`pdhg_step_sizes`), given ones are checked against the step condition. Tensors
        are diagonal steps (see :func:`diagonal_preconditioners`) and are used as given.
    theta
        Extrapolation parameter in ``[0, 1]``.
    y0
        Starting dual variables (zeros by default): one per block, each of the shape of
        ``K_i(x0)`` or one that broadcasts to it.
    norms
        Known ``||K_i||`` to skip power iterations.
    iterations, tolerance
        Stop after ``iterations`` or when ``||x_new - x|| <= tolerance ||x_new||`` (``0 <=
        tolerance < 1``; stopping at ``iterations`` above a ``tolerance > 0`` is reported,
        :mod:`mrirecon.solvers.convergence`).
    batch_dims
        Leading axes of ``x`` that index independent problems: the tolerance then holds for
        each of them (the slowest decides).
    callback
        ``callback(iteration, x, relative_change)`` after each iteration.

    Returns
    -------
    Tensor
        The last primal iterate.

    Raises
    ------
    NonFiniteError
        At the first primal iterate holding NaN or Inf (checked every iteration where the
        relative change is computed, else every
        :data:`~mrirecon.solvers.stopping.FINITE_CHECK_EVERY`), naming the iteration and the
        steps.
    """
    check_iterations("pdhg", iterations=iterations)
    check_tolerance("pdhg", tolerance=tolerance)
    ops = [K] if isinstance(K, LinearOperator) else list(K)
    proxes = list(prox_f_conj) if isinstance(prox_f_conj, (list, tuple)) else [prox_f_conj]
    if len(proxes) != len(ops):
        raise ValueError(f"pdhg: {len(proxes)} prox_f_conj for {len(ops)} operator blocks")
    if not 0 <= theta <= 1:
        raise ValueError(f"pdhg: theta must lie in [0, 1], got {theta}")
    check_finite_start("pdhg", x0)  # it returned zeros, without a word
    sigmas, tau = _steps(ops, x0, sigma, tau, norms)
    x = x0.clone()
    if y0 is None:
        ys = [k(x).zero_() for k in ops]
    else:
        ys = _dual_starts(y0, ops, x)
    xbar = x

    def diverged() -> str:
        return (f"the steps tau {describe(tau)}, sigma {', '.join(describe(s) for s in sigmas)} "
                "are likely above the step condition tau ||sum_i sigma_i K_i^H K_i|| < 1 "
                "(diagonal tensor steps are used as given; diagonal_preconditioners meets it)")

    for it in range(iterations):
        ys = [p(y + s * k(xbar), s) for p, y, s, k in zip(proxes, ys, sigmas, ops)]
        step = ops[0].H(ys[0])
        for k, y in zip(ops[1:], ys[1:]):
            step = step + k.H(y)
        x_new = x - tau * step
        if prox_g is not None:
            x_new = prox_g(x_new, tau)
        diff = x_new - x
        xbar = x_new + theta * diff if theta != 0 else x_new
        x = x_new
        if tolerance > 0 or callback is not None:
            rel = per_system_ratio(diff, x, batch_dims)
            if callback is not None:
                callback(it, x, rel)
            check_finite_iterate("pdhg", it, iterations, x, rel, diverged)
            if tolerance > 0 and rel <= tolerance:
                break
        else:
            check_finite_iterate("pdhg", it, iterations, x, None, diverged)
    else:
        if tolerance > 0:
            report_unconverged("pdhg", iterations, rel, tolerance, "relative change")
    return x


def _dual_starts(y0: Sequence[Tensor] | Tensor, ops: list[LinearOperator], x: Tensor) -> list:
    """``y0`` checked against the blocks: one start per block (a single tensor for two blocks
    started only the first and dropped the second from every iteration, without a word), each of
    the shape of ``K_i(x0)`` (another one failed on torch's "The size of tensor a (3) must
    match")."""
    given = list(y0) if isinstance(y0, (list, tuple)) else [y0]
    if len(given) != len(ops):
        raise ValueError(f"pdhg: y0 has {len(given)} start(s) for {len(ops)} operator blocks "
                         "(one dual start per block of K)")
    one = len(ops) == 1  # a single block is named "y0" / "K(x0)", as the caller wrote it
    return [start_at("pdhg", "y0" if one else f"y0[{i}]", v, tuple(k(x).shape),
                     "K(x0)" if one else f"K[{i}](x0)")
            for i, (v, k) in enumerate(zip(given, ops))]
