"""Differentiable CG by implicit differentiation (for MoDL-type data consistency).

``x = (G + lam I)^{-1} b`` is computed by CG without recording the iterations. Its backward
pass solves the adjoint system, which is the same Hermitian system, by CG again:

* ``v = (G + lam I)^{-1} g`` for the incoming gradient ``g``;
* ``dL/db = v``;
* ``dL/dlam = -Re <v, x>`` (summed to ``lam``'s shape);
* ``dL/dtheta = -Re <v, (dG/dtheta) x>`` for tensors ``theta`` inside ``G`` (coil maps, learned
  weights), obtained as one vector-Jacobian product of ``G`` at ``x``.

Memory is therefore that of one application of ``G`` instead of ``iterations`` of them.
The gradients are exact for the exact solution; with a truncated CG they are the gradients of
the converged map, which is what MoDL's authors use. Under ``create_graph=True``
(Hessian-vector products, gradient penalties) the backward differentiates again for the
right-hand side and ``lam`` (its adjoint solve is the same implicit solve), and refuses tensors
inside the operator (:data:`SECOND_ORDER_REFUSED`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mrirecon.core.names import accepts_deprecated_names
from mrirecon.solvers.cg import cg
from mrirecon.solvers.convergence import quiet


def _sum_to_shape(t: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast result back to ``shape`` (the reverse of broadcasting)."""
    if t.shape == shape:
        return t
    lead = t.ndim - len(shape)
    if lead > 0:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


class _CGSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gram, options, rhs, lam, *params):
        def system(v: Tensor) -> Tensor:
            return gram(v) + lam * v

        x = cg(system, rhs, options["x0"], iterations=options["iterations"],
               tolerance=options["tolerance"], batch_dims=options["batch_dims"])
        ctx.gram, ctx.options = gram, options
        ctx.save_for_backward(x, lam, *params)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        x, lam, *params = ctx.saved_tensors
        gram, options = ctx.gram, ctx.options
        higher = torch.is_grad_enabled()  # create_graph=True: a backward that differentiates
        if higher and (any(ctx.needs_input_grad[4:]) or options.get("tracking")):
            raise RuntimeError(SECOND_ORDER_REFUSED)

        def system(v: Tensor) -> Tensor:
            return gram(v) + lam * v

        with quiet():  # the forward solve's report stands for both
            if higher:  # the adjoint solve is this Function again: v differentiates too
                v = _CGSolve.apply(gram, {**options, "x0": None}, grad_x, lam)
            else:
                with torch.no_grad():
                    v = cg(system, grad_x, iterations=options["iterations"],
                           tolerance=options["tolerance"], batch_dims=options["batch_dims"])
        grad_rhs = v if ctx.needs_input_grad[2] else None
        grad_lam = None
        if ctx.needs_input_grad[3]:
            prod = -(v.conj() * x) if v.is_complex() else -(v * x)
            g = prod.real if prod.is_complex() else prod
            g = _sum_to_shape(g, lam.shape)
            grad_lam = g.to(lam.dtype)
        grad_params: list[Tensor | None] = [None] * len(params)
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[4:]) if need]
        if wanted:
            with torch.enable_grad():
                out = gram(x.detach())
                found = torch.autograd.grad(
                    out, [params[i] for i in wanted], grad_outputs=-v, allow_unused=True
                )
            for i, g in zip(wanted, found):
                grad_params[i] = g
        return (None, None, grad_rhs, grad_lam, *grad_params)


#: Second derivatives (``create_graph=True``) through the implicit backward are exact for the
#: right-hand side and ``lam``; for tensors inside ``gram`` (coil maps made by a network) they
#: would need ``gram``'s derivative at a solution autograd cannot hold apart from the solve.
#: Refused rather than wrong: the backward was ``once_differentiable``, whose error only
#: ``.backward()`` met, and ``torch.autograd.grad`` through it gave wrong second derivatives
#: silently (MoDL's default implicit DC 86 % off).
SECOND_ORDER_REFUSED = (
    "cg_solve: second derivatives (create_graph=True) through the implicit backward are taken "
    "for the right-hand side and lam only, and tensors inside the operator (coil maps, learned "
    "weights) need a gradient here: differentiate through the CG iterations instead "
    "(implicit=False, e.g. MoDL(implicit=False) or ProximalDC(implicit=False))")


@accepts_deprecated_names
def cg_solve(
    gram: Callable[[Tensor], Tensor],
    rhs: Tensor,
    lam: float | Tensor = 0.0,
    *,
    params: Sequence[Tensor] = (),
    x0: Tensor | None = None,
    iterations: int = 10,
    tolerance: float = 0.0,
    batch_dims: int = 0,
) -> Tensor:
    """Solve ``(gram + lam I) x = rhs`` by CG, differentiable by implicit differentiation.

    Parameters
    ----------
    gram
        Hermitian positive semi-definite map (e.g. ``A.gram``); with ``lam > 0`` the system is
        positive definite.
    rhs
        Right-hand side ``(..., *domain)``; differentiable.
    lam
        Non-negative real scalar or tensor broadcastable to ``rhs`` (e.g. ``(B, 1, 1)`` per
        sample); differentiable when a tensor with ``requires_grad``.
    params
        Tensors that ``gram`` depends on and that need gradients (e.g. coil maps of a
        :class:`~mrirecon.operators.SenseOperator` made by a network). Gradients flow to these
        only when listed here; ``gram`` itself is called under ``no_grad`` in the solve.
    x0
        Warm start (not differentiated).
    iterations, tolerance, batch_dims
        As in :func:`~mrirecon.solvers.cg.cg`, used for the forward and the backward solve.

    Returns
    -------
    Tensor
        ``x`` with the shape of ``rhs``.
    """
    if not isinstance(lam, Tensor):
        lam = torch.tensor(float(lam), dtype=rhs.real.dtype, device=rhs.device)
    if lam.is_complex():
        raise TypeError(f"cg_solve: lam must be real, got {lam.dtype}")
    options = {
        "x0": None if x0 is None else x0.detach(),
        "iterations": int(iterations),
        "tolerance": float(tolerance),
        "batch_dims": int(batch_dims),
    }
    return _CGSolve.apply(gram, options, rhs, lam, *params)
