"""FISTA: accelerated proximal gradient for ``min_x f(x) + g(x)`` with smooth ``f``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core.checks import check_iterations, check_tolerance
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.parallel import serial_if_small
from mrirecon.solvers.convergence import report_unconverged
from mrirecon.solvers.prox import Prox
from mrirecon.solvers.stopping import (check_finite_iterate, check_finite_start, describe,
                                       per_system_ratio)


def _real_inner(a: Tensor, b: Tensor) -> float:
    return float((a.conj() * b).real.sum() if a.is_complex() else (a * b).sum())


def _restarted_per_system(t: float | Tensor, z: Tensor, x_new: Tensor, diff: Tensor,
                          batch: int) -> tuple[Tensor, Tensor]:
    """One momentum update of a batch of ``batch`` leading system axes with adaptive restart
    judged per system: ``(t, z)`` for the next iteration, ``t`` per system ``(B, 1, ..., 1)``
    in float64 (as the scalar path's Python floats). The whole batch's inner product had reset
    every system's momentum at once, so a batched solve differed from slice-by-slice calls
    (5.7e-3 NRMSE on one of two slices)."""
    dims = tuple(range(batch, z.ndim))
    r = z - x_new
    inner = ((r.conj() * diff).real if r.is_complex() else r * diff).sum(dim=dims, keepdim=True)
    if not isinstance(t, Tensor):
        t = torch.full(inner.shape, float(t), dtype=torch.float64, device=z.device)
    t = torch.where(inner.to(torch.float64) > 0, torch.ones_like(t), t)
    t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
    coef = ((t - 1) / t_new).to(diff.real.dtype if diff.is_complex() else diff.dtype)
    return t_new, torch.addcmul(x_new, diff, coef)


def _step_batch(step: float | Tensor, x: Tensor) -> int:
    """Leading axes of ``x`` along which a per-system ``step`` (e.g. ``(B, 1, 1)``) varies."""
    if not isinstance(step, Tensor) or step.ndim != x.ndim:
        return 0
    lead = 0
    while lead < step.ndim and step.shape[lead] > 1:
        lead += 1
    return lead


def _check_step(step: float | Tensor) -> None:
    """A finite step ``> 0`` (each entry of a per-system tensor): ``inf`` made every iterate NaN,
    a NaN or negative tensor step (only numbers were checked) NaN or diverging iterates."""
    if isinstance(step, Tensor):
        s = step.detach()
        if s.is_complex() or s.numel() == 0 or not bool((torch.isfinite(s) & (s > 0)).all()):
            shown = s.flatten()[:4].tolist() if not s.is_complex() else s.dtype
            raise ValueError(f"fista: step must be finite and > 0 (every entry of a per-system "
                             f"step), got a tensor of shape {tuple(s.shape)}: {shown}")
        return
    try:
        ok = math.isfinite(float(step)) and float(step) > 0
    except (TypeError, ValueError):
        ok = False
    if isinstance(step, bool) or not ok:
        raise ValueError(f"fista: step must be a finite number > 0, got {step!r}")


@accepts_deprecated_names
def fista(
    grad_f: Callable[[Tensor], Tensor],
    prox_g: Prox | None,
    x0: Tensor,
    step: float | Tensor,
    *,
    iterations: int = 100,
    tolerance: float = 0.0,
    callback: Callable[[int, Tensor, float], None] | None = None,
    restart: bool = False,
    accelerate: bool = True,
) -> Tensor:
    """Fast iterative shrinkage-thresholding (Beck & Teboulle 2009).

    Iterates ``x_{k+1} = prox_{step g}(z_k - step grad_f(z_k))``,
    ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``,
    ``z_{k+1} = x_{k+1} + (t_k - 1) / t_{k+1} (x_{k+1} - x_k)``.

    Parameters
    ----------
    grad_f
        Gradient of the smooth term, ``x -> grad f(x)`` (for ``1/2||Ax - y||^2``:
        ``A^H (A x - y)``). Must be ``L``-Lipschitz.
    prox_g
        ``prox_g(v, t) = argmin_x t g(x) + 1/2||x - v||^2``; ``None`` for ``g = 0``.
    x0
        Starting point; sets shape, dtype and device.
    step
        Step size, at most ``1 / L`` (e.g. ``1 / A.operator_norm(x0)**2``).
    iterations
        Iteration limit.
    tolerance
        Stop when ``||x_{k+1} - x_k|| <= tolerance * ||x_{k+1}||`` (``0`` disables; ``< 1``);
        with a per-system ``step`` (``(B, 1, ..., 1)``) for every one of the ``B`` systems.
        Stopping at ``iterations`` above it is reported (:mod:`mrirecon.solvers.convergence`).
    callback
        ``callback(iteration, x, relative_change)`` after each iteration.
    restart
        Gradient-based adaptive restart (O'Donoghue & Candes 2015): reset the momentum when
        ``<z_k - x_{k+1}, x_{k+1} - x_k> > 0``. Helps on strongly convex problems.
    accelerate
        ``False`` runs plain ISTA (proximal gradient).

    Returns
    -------
    Tensor
        The last iterate ``x``.

    Raises
    ------
    NonFiniteError
        At the first iterate holding NaN or Inf (checked every iteration where the relative
        change is computed, else every
        :data:`~mrirecon.solvers.stopping.FINITE_CHECK_EVERY`), naming the iteration and the
        step: a step above ``1/L`` diverges (it ran every remaining iteration on NaN).
    """
    check_iterations("fista", iterations=iterations)
    check_tolerance("fista", tolerance=tolerance)
    _check_step(step)
    check_finite_start("fista", x0)  # every iterate was NaN, without a word
    x = x0.clone()
    z = x
    t = 1.0
    batch = _step_batch(step, x0)
    rel = math.nan
    measured = tolerance > 0 or callback is not None  # the relative change is computed

    def diverged() -> str:
        return (f"the step {describe(step)} is likely above 1/L (L: the Lipschitz constant of "
                "grad_f, ||A||^2 for least squares; at most 1/L converges)")

    for it in range(iterations):
        g = grad_f(z)
        # the updates are short elementwise passes: one intra-op thread for a small image
        # (core.parallel.SERIAL_MAX); grad_f and prox_g choose their own threads
        with serial_if_small(z):  # one pass each: z - step g (addcmul for a per-slice step)
            x_new = torch.addcmul(z, g, step, value=-1) if isinstance(step, Tensor) else torch.add(z, g, alpha=-float(step))
        if prox_g is not None:
            x_new = prox_g(x_new, step)
        with serial_if_small(z):
            diff = x_new - x
            rel = per_system_ratio(diff, x_new, batch) if measured else math.nan
            if accelerate and restart and batch:  # each system restarts its own momentum
                t, z = _restarted_per_system(t, z, x_new, diff, batch)
            elif accelerate:
                if restart and _real_inner(z - x_new, diff) > 0:
                    t = 1.0
                t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
                z = torch.add(x_new, diff, alpha=(t - 1) / t_new)
                t = t_new
            else:
                z = x_new
        x = x_new
        if callback is not None:
            callback(it, x, rel)
        check_finite_iterate("fista", it, iterations, x, rel if measured else None, diverged)
        if tolerance > 0 and rel <= tolerance:
            break
    else:
        if tolerance > 0:
            report_unconverged("fista", iterations, rel, tolerance, "relative change")
    return x
