"""Proximal data consistency by a differentiable conjugate-gradient solve (MoDL, PnP, HQS).

``x = argmin_x ||A x - y||^2 + lam ||x - z||^2``, i.e. ``(A^H A + lam I) x = A^H y + lam z``.

:func:`cg_solve` runs :func:`mrirecon.solvers.cg` inside an autograd ``Function`` whose backward
solves the adjoint system -- the same Hermitian system -- by CG once more (implicit
differentiation), so no CG iterations are stored. Gradients reach the right-hand side and
``lam``; the operator is a constant (operators hold no trainable state). When an operator tensor
does require a gradient, :class:`ProximalDC` falls back to differentiating through the unrolled
iterations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.solvers import cg


def _sum_to_shape(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(dim=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(dim=i, keepdim=True)
    return g


class _ImplicitCG(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rhs, lam, gram, max_iterations, tolerance, batch_dims, x0):  # noqa: D102
        def system(v):
            return gram(v) + lam * v

        x = cg(system, rhs, x0, max_iterations=max_iterations, tolerance=tolerance, batch_dims=batch_dims)
        ctx.save_for_backward(x, lam)
        ctx.gram, ctx.settings = gram, (max_iterations, tolerance, batch_dims)
        return x

    @staticmethod
    def backward(ctx, grad_x):  # noqa: D102
        x, lam = ctx.saved_tensors
        max_iterations, tolerance, batch_dims = ctx.settings

        def system(v):
            return ctx.gram(v) + lam * v

        # (G + lam I) is Hermitian: its adjoint system is itself.
        g = cg(system, grad_x, None, max_iterations=max_iterations, tolerance=tolerance, batch_dims=batch_dims)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            # dx/dlam = -(G + lam I)^{-1} x  ->  dL/dlam = -Re <g, x>
            prod = (g.conj() * x).real if g.is_complex() else g * x
            grad_lam = _sum_to_shape(-prod, lam.shape)
        return g, grad_lam, None, None, None, None, None


def cg_solve(
    gram: Callable[[Tensor], Tensor],
    rhs: Tensor,
    lam: Tensor | float,
    *,
    max_iterations: int = 10,
    tolerance: float = 0.0,
    batch_dims: int = 0,
    x0: Tensor | None = None,
    implicit: bool = True,
) -> Tensor:
    """Solve ``(gram + lam I) x = rhs`` by CG, differentiably.

    Parameters
    ----------
    gram
        Hermitian positive semi-definite map (e.g. ``op.gram``); treated as constant when
        ``implicit``.
    rhs
        Right-hand side (domain shaped, complex or real).
    lam
        Non-negative real scalar or tensor broadcastable to ``rhs`` (``gram + lam I`` must be
        positive definite).
    max_iterations, tolerance, batch_dims
        Passed to :func:`mrirecon.solvers.cg`.
    x0
        Warm start (not differentiated through).
    implicit
        ``True``: backward by a second CG solve (memory independent of the iterations).
        ``False``: autograd through the unrolled iterations.

    Returns
    -------
    Tensor
        ``x`` with the shape and dtype of ``rhs``.
    """
    lam_t = lam if isinstance(lam, Tensor) else torch.tensor(float(lam), device=rhs.device)
    lam_t = lam_t.to(rhs.real.dtype)
    if not implicit:
        return cg(
            lambda v: gram(v) + lam_t * v,
            rhs,
            x0,
            max_iterations=max_iterations,
            tolerance=tolerance,
            batch_dims=batch_dims,
        )
    start = None if x0 is None else x0.detach()
    return _ImplicitCG.apply(rhs, lam_t, gram, max_iterations, tolerance, batch_dims, start)


def _operator_has_grad(op: LinearOperator) -> bool:
    return any(t.requires_grad for t in list(op.buffers()) + list(op.parameters()))


class ProximalDC(nn.Module):
    """``x = (A^H A + lam I)^{-1} (A^H y + lam z)`` with a learned ``lam`` (MoDL's DC layer).

    Parameters
    ----------
    lam
        Initial regularisation weight (MoDL starts at 0.05).
    learnable
        Learn ``lam`` (default) or keep it fixed.
    max_iterations, tolerance
        CG settings (MoDL uses 10 iterations).
    implicit
        Backward by a second CG solve instead of storing iterations.
    """

    def __init__(
        self,
        lam: float = 0.05,
        learnable: bool = True,
        max_iterations: int = 10,
        tolerance: float = 0.0,
        implicit: bool = True,
    ) -> None:
        super().__init__()
        value = torch.tensor([float(lam)])
        if learnable:
            self.lam = nn.Parameter(value)
        else:
            self.register_buffer("lam", value)
        self.max_iterations, self.tolerance, self.implicit = max_iterations, tolerance, implicit

    def forward(
        self,
        z: Tensor,
        y: Tensor,
        op: LinearOperator,
        aty: Tensor | None = None,
        x0: Tensor | None = None,
    ) -> Tensor:
        """Images ``z`` ``(B, ...)`` (batch axis first), data ``y``: the proximal point ``x``."""
        if aty is None:
            aty = op.H(y)
        lam = self.lam.to(z.real.dtype)
        rhs = aty + lam * z
        return cg_solve(
            op.gram,
            rhs,
            lam,
            max_iterations=self.max_iterations,
            tolerance=self.tolerance,
            batch_dims=1 if rhs.ndim > 1 else 0,
            x0=x0,
            implicit=self.implicit and not _operator_has_grad(op),
        )
