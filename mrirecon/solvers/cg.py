"""Conjugate gradient for Hermitian positive (semi-)definite systems ``A x = b``."""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core.checks import NonFiniteError, check_iterations, check_tolerance, start_at
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.solvers.convergence import report_unconverged


def _dot(a: Tensor, b: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    """Real part of ``<a, b>`` summed over ``dims`` (all when ``None``), keeping dims.

    Complex inputs are summed as their real views, ``Re <a, b> = sum(Re a Re b + Im a Im b)``:
    one product pass without the complex multiply's cross terms (a third of the time at
    320 x 320 complex64, one CPU thread)."""
    if a.is_complex() and dims != ():  # torch sums everything over dim=(), as the line below
        dims = None if dims is None else tuple(d % a.ndim for d in dims)  # axes of the complex a
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
        prod = a * b
        if dims is None:
            return prod.sum()
        return prod.sum(dim=(*dims, -1), keepdim=True).squeeze(-1)
    prod = (a.conj() * b).real if a.is_complex() else a * b
    if dims is None:
        return prod.sum()
    return prod.sum(dim=dims, keepdim=True)


def _batch_axes(who: str, batch_dims: object, rhs_shape: tuple[int, ...]) -> int:
    """``batch_dims`` as an int in ``[0, ndim)`` (``0`` for a 0-d ``rhs``): -1 failed as "dim 1
    appears multiple times", one beyond the axes of ``rhs`` was taken without a word."""
    ndim = len(rhs_shape)
    try:
        n = operator.index(batch_dims)  # numpy integers too; not 1.0, not True
    except TypeError:
        n = None
    if n is None or isinstance(batch_dims, bool):
        raise TypeError(f"{who}: batch_dims must be an integer, got {batch_dims!r}")
    if n < 0 or (n and n >= ndim):
        raise ValueError(f"{who}: batch_dims must be in [0, {ndim}): the number of leading axes "
                         f"of rhs {tuple(rhs_shape)} that index independent systems, got {n}")
    return n


#: Directions whose Rayleigh quotient is below this many ``eps`` of the largest one met are
#: taken as the gram's null space (see :func:`cg`): the computed ``p^H A p`` has an absolute error
#: of a few ``eps * ||A|| * ||p||^2``.
RAYLEIGH_FLOOR = 16

#: A ``p^H A p`` below ``-NEGATIVE_FLOOR * eps`` times the largest Rayleigh quotient met times
#: ``p^H p`` is negative curvature, not rounding: the gram is not positive semi-definite and CG
#: refuses it (see :func:`cg`). The rounding error of ``p^H A p`` is a few ``eps * log2(n)`` of
#: ``||A|| ||p||^2`` (FFT stages, the sums): about 100 eps for any image; shipped solves at
#: float32 never met a negative one (CG-SENSE without regularisation, 300 iterations, 64-320
#: pixels square; CT normal equations), their smallest quotient was 800 eps above zero.
NEGATIVE_FLOOR = 1024


@accepts_deprecated_names
def cg(
    gram: Callable[[Tensor], Tensor],
    rhs: Tensor,
    x0: Tensor | None = None,
    *,
    iterations: int = 10,
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
        Starting point (zeros by default): the shape of ``rhs``, or one that broadcasts to it
        (one start for every system); a start of more or other axes is refused.
    iterations
        Iteration limit.
    tolerance
        Stop when ``||r|| <= tolerance * ||rhs||`` (for every batch item).
    batch_dims
        Number of leading axes holding independent systems (each gets its own step sizes).
        ``0`` treats the whole tensor as one system; at most ``rhs.ndim - 1``.
    callback
        Called as ``callback(iteration, x, residual_norm)`` after each iteration.

    Returns
    -------
    Tensor
        The approximate solution.

    Raises
    ------
    ValueError
        ``gram`` is not positive semi-definite: some ``p^H gram(p)`` is negative beyond rounding
        (:data:`NEGATIVE_FLOOR`), naming the iteration (was: CG froze there and returned zeros
        or a wrong ``x`` without a word); :class:`~mrirecon.core.checks.NonFiniteError` for NaN
        or Inf values; a ``tolerance`` outside ``[0, 1)``; an ``x0`` of another shape than
        ``rhs`` (``TypeError``: no tensor); ``batch_dims`` outside ``[0, rhs.ndim)``.

    Notes
    -----
    With ``tolerance > 0``, stopping at ``iterations`` with a system above it is reported
    (:mod:`mrirecon.solvers.convergence`). A system frozen in the gram's null space (a
    semi-definite gram) counts as converged when its residual is at rounding, at most
    ``sqrt(RAYLEIGH_FLOOR * eps)`` of ``||rhs||`` (a consistent right-hand side ``A^H y`` has no
    more along the directions that rounding cannot tell from the null space); above that it is
    reported as stalled: a right-hand side outside the gram's range, a system too
    ill-conditioned for the dtype, or an indefinite one. A zero ``rhs`` with a start ``x0``
    measures the residual relative to the start's. A non-Hermitian ``gram`` is not detected:
    CG then runs to the limit, which the report says when a tolerance was asked.
    """
    check_iterations("cg", iterations=iterations)
    check_tolerance("cg", tolerance=tolerance)
    batch_dims = _batch_axes("cg", batch_dims, tuple(rhs.shape))
    dims = None if batch_dims == 0 else tuple(range(batch_dims, rhs.ndim))
    if x0 is not None:
        x0 = start_at("cg", "x0", x0, tuple(rhs.shape), "rhs (which sets the solution's shape)")
    x = torch.zeros_like(rhs) if x0 is None else x0
    r = rhs - gram(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = _dot(r, r, dims)
    bb = _dot(rhs, rhs, dims)
    if not bool(torch.isfinite(bb).all()):  # NaN compares False: it looked converged, x = 0
        raise NonFiniteError("cg: the right-hand side holds NaN or Inf values (from the data or the "
                         "operator, e.g. coil maps divided by a zero sum of squares)")
    if not bool(torch.isfinite(rr).all()):
        raise NonFiniteError("cg: the residual at x0 holds NaN or Inf values (x0 or the operator)")
    # Systems whose residual reached ``tolerance`` -- or machine precision, where the
    # recurrences only amplify rounding (a tiny p^H A p gives a huge step) -- are frozen.
    eps = torch.finfo(rr.dtype).eps
    # the residual's scale: ||rhs||, or the start's residual where rhs is 0 (the solution 0,
    # reached from an x0: the threshold was 0, so CG ran to its limit and reported 1e-59)
    scale = torch.where(bb > 0, bb, rr)
    threshold = torch.clamp(torch.as_tensor(tolerance**2, dtype=rr.dtype) * scale, min=0) + (eps**2) * scale
    zero = torch.zeros_like(rr)
    one = torch.ones_like(rr)
    # The largest Rayleigh quotient p^H A p / p^H p met so far (a lower bound of ||A||): a
    # direction whose quotient is below RAYLEIGH_FLOOR * eps of it lies in the gram's null space
    # up to rounding (p^H A p is then rounding noise), so the step along it is noise divided by
    # noise. A semi-definite gram (no regularisation: single coil, unsampled columns) met such
    # directions once the residual was rounding noise, and x grew to 1e9 times the solution.
    top = torch.zeros_like(rr)
    stalled = torch.zeros_like(rr, dtype=torch.bool)
    done = iterations
    for it in range(iterations):
        active = (rr > threshold) & ~stalled
        if not bool(torch.any(active)):
            done = it
            break
        ap = gram(p)
        pap = _dot(p, ap, dims)
        pp = _dot(p, p, dims)
        top = torch.maximum(top, pap / torch.where(pp > 0, pp, one))
        negative = active & (pap < -NEGATIVE_FLOOR * eps * top * pp)
        if bool(torch.any(negative | ~torch.isfinite(pap))):  # one device sync for both
            if not bool(torch.isfinite(pap).all()):
                raise NonFiniteError(f"cg: gram(p) holds NaN or Inf values at iteration {it} (the "
                                     "operator produced them, e.g. from NaN coil maps)")
            _refuse_negative(pap, pp, top, negative, it, batch_dims)
        informative = pap > RAYLEIGH_FLOOR * eps * top * pp
        stalled |= active & ~informative  # frozen: no step along the null space makes sense
        ok = active & informative & (pap > 0)
        alpha = torch.where(ok, rr / torch.where(ok, pap, one), zero)
        # fused ``x + alpha p`` etc. (one pass instead of two; same values up to rounding)
        x = torch.addcmul(x, alpha, p)
        r = torch.addcmul(r, alpha, ap, value=-1)
        rr_new = _dot(r, r, dims)
        beta = torch.where(ok, rr_new / torch.where(ok, rr, one), zero)
        p = torch.addcmul(r, beta, p)
        rr = torch.where(ok, rr_new, rr)
        if callback is not None:
            callback(it, x, torch.sqrt(rr))
    if tolerance > 0:
        # frozen with more residual than rounding leaves: was counted converged, so a float32
        # diag(1, ..., 1, 1e-6) system returned a relative residual of 0.32 without a word
        stuck = stalled & (rr > threshold) & (rr > RAYLEIGH_FLOOR * eps * scale)
        left = ((rr > threshold) & ~stalled) | stuck
        if bool(torch.any(left)):
            worst = float(torch.sqrt((rr / torch.where(scale > 0, scale, one))[left].max()).detach())
            kind = str(rr.dtype).removeprefix("torch.")
            note = "" if not bool(torch.any(stuck)) else (
                "it stalled: the rest of the residual lies along directions where p^H A p is zero "
                f"to {kind} rounding (a right-hand side outside the gram's range, a system too "
                "ill-conditioned for this precision, or an indefinite one); regularise it (lam > "
                "0) or solve in float64")
            report_unconverged("cg", done, worst, tolerance, "relative residual", note)
    return x


def _refuse_negative(pap: Tensor, pp: Tensor, top: Tensor, negative: Tensor, it: int,
                     batch_dims: int) -> None:
    """The ``ValueError`` of a negative ``p^H A p`` (the first system that met one)."""
    idx = tuple(int(i) for i in torch.nonzero(negative)[0])
    where = f" (system {idx[:batch_dims]} of the batch)" if batch_dims else ""
    quotient, scale = float(pap[idx] / pp[idx]), float(top[idx])
    raise ValueError(
        f"cg: the system is not positive definite: p^H A p / p^H p = {quotient:.3g} at iteration "
        f"{it}{where}, where the largest p^H A p / p^H p met was {scale:.3g}; CG solves Hermitian "
        "positive (semi-)definite systems only (a negative regularisation weight such as "
        "lam < 0, a gram with a sign error, or an operator whose adjoint or closed-form gram does "
        "not match its forward? mrirecon.core.check_operator(op) tests both)")
