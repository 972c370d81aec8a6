"""Proximal data consistency by a differentiable conjugate-gradient solve (MoDL, PnP, HQS).

``x = argmin_x ||A x - y||^2 + lam ||x - z||^2``, i.e. ``(A^H A + lam I) x = A^H y + lam z``.

The solve is :func:`mrirecon.solvers.cg_solve`: CG inside an autograd ``Function`` whose
backward solves the adjoint system -- the same Hermitian system -- by CG once more (implicit
differentiation), so no CG iterations are stored. Gradients reach the right-hand side, ``lam``
and operator tensors that require a gradient (e.g. coil maps made by a network): for mrirecon's
own operators their buffers / parameters; for an operator holding a user's code (a
:class:`~mrirecon.core.FunctionOperator`, a class defined outside mrirecon) whatever its gram
reaches through autograd, tensors in closures and plain attributes included (see
:func:`operator_tensors_with_grad`). With ``implicit=False`` autograd differentiates through the
unrolled iterations instead (the reference the implicit backward is tested against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mrirecon.core import HasImageSupport, LinearOperator, capability
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.checks import LearnedWeightError
from mrirecon.core.operator_check import check_operator_once, holds_user_code
from mrirecon.solvers import cg, cg_solve
from mrirecon.solvers.implicit import _CGSolve


@accepts_deprecated_names
def solve_proximal(
    gram: Callable[[Tensor], Tensor],
    rhs: Tensor,
    lam: Tensor | float,
    *,
    iterations: int = 10,
    tolerance: float = 0.0,
    batch_dims: int = 0,
    x0: Tensor | None = None,
    implicit: bool = True,
    params: Sequence[Tensor] | None = (),
) -> Tensor:
    """Solve ``(gram + lam I) x = rhs`` by CG, differentiably.

    Parameters
    ----------
    gram
        Hermitian positive semi-definite map (e.g. ``op.gram``).
    rhs
        Right-hand side (domain shaped, complex or real).
    lam
        Non-negative real scalar or tensor broadcastable to ``rhs`` (``gram + lam I`` must be
        positive definite).
    iterations, tolerance, batch_dims
        Passed to :func:`mrirecon.solvers.cg`.
    x0
        Warm start: detached with ``implicit`` (the gradient of the converged solve does not
        depend on it); differentiated through with ``implicit=False``, like the iterations.
    implicit
        ``True``: backward by a second CG solve (memory independent of the iterations).
        ``False``: autograd through the unrolled iterations.
    params
        Tensors inside ``gram`` that need gradients (implicit mode only; the unrolled mode
        tracks everything). ``None``: not known (a user's operator, see
        :func:`operator_tensors_with_grad`): when autograd records, ``gram`` is applied once
        more, at the solution, and the gradient reaches whatever that application depends on
        (held until backward: the memory of one ``gram``, none when nothing in it requires a
        gradient). That application costs one ``gram`` per solve whenever autograd records,
        also when nothing in ``gram`` requires a gradient: only its output tells, and a memo
        per operator would miss a tensor whose ``requires_grad`` is switched on later (a
        frozen weight unfrozen). Inference: call under ``torch.no_grad()`` (no extra ``gram``).

    Returns
    -------
    Tensor
        ``x`` with the shape and dtype of ``rhs``.
    """
    # a float goes straight to the solve's dtype (through float32 it was 4e-8 off in float64)
    lam_t = lam.to(rhs.real.dtype) if isinstance(lam, Tensor) else \
        torch.tensor(float(lam), dtype=rhs.real.dtype, device=rhs.device)
    if implicit and params is None:
        return _solve_tracking_gram(gram, rhs, lam_t, x0, iterations=iterations,
                                    tolerance=tolerance, batch_dims=batch_dims)
    if implicit:
        return cg_solve(
            gram, rhs, lam_t, params=tuple(params), x0=x0,
            iterations=iterations, tolerance=tolerance, batch_dims=batch_dims,
        )
    return cg(
        lambda v: gram(v) + lam_t * v, rhs, x0,
        iterations=iterations, tolerance=tolerance, batch_dims=batch_dims,
    )


class _Solved(_CGSolve):
    """:func:`~mrirecon.solvers.cg_solve`'s autograd function for a solution already computed
    (``options["solution"]``): the same implicit backward, for ``rhs`` and ``lam``."""

    @staticmethod
    def forward(ctx, gram, options, rhs, lam, *params):
        x = options.pop("solution")
        ctx.gram, ctx.options = gram, options
        ctx.save_for_backward(x, lam, *params)
        return x


def _solve_tracking_gram(gram: Callable[[Tensor], Tensor], rhs: Tensor, lam: Tensor,
                         x0: Tensor | None, **options) -> Tensor:
    """The implicit solve when ``gram``'s tensors are unknown (``params=None``).

    ``x = (G + lam I)^{-1} b`` is solved as :func:`~mrirecon.solvers.cg_solve` does; then
    ``r = G(x)`` is applied once with autograd recording, and the solve is attached to the
    right-hand side ``b - (r - r.detach())``: the same value (``r - r.detach()`` is 0), while
    its gradient ``-v`` w.r.t. ``r`` (``v = (G + lam I)^{-1} dL/dx``) is the implicit gradient
    ``-Re <v, (dG/dtheta) x>`` of every tensor ``theta`` that ``G`` depends on, leaf or not,
    carried by autograd through ``r``'s own graph. ``r`` is computed on every call while
    autograd records, whether or not anything in ``G`` turns out to require a gradient (see
    :func:`solve_proximal`'s ``params``)."""
    with torch.no_grad():
        x = cg(lambda v: gram(v) + lam * v, rhs, None if x0 is None else x0.detach(), **options)
    tracking = False  # r carries the operator's tensors: no second derivatives (cg_solve's)
    if torch.is_grad_enabled():
        r = gram(x)
        if r.requires_grad:
            rhs, tracking = rhs - (r - r.detach()), True
    # a new tensor object for the output (x itself may be saved by r's graph)
    return _Solved.apply(gram, {**options, "solution": x.detach(), "tracking": tracking}, rhs,
                         lam)


def operator_tensors_with_grad(op: LinearOperator) -> list[Tensor] | None:
    """The tensors inside ``op.gram`` the implicit backward differentiates (``params`` of
    :func:`solve_proximal`).

    For an operator built of mrirecon's own classes: its buffers / parameters that require a
    gradient (e.g. network-made maps, or the tensor factor ``c`` of ``c * A``, which
    :class:`~mrirecon.core.operator.ScaledOperator` holds as a buffer); they hold all its
    tensors. ``None`` for an operator holding a :class:`~mrirecon.core.FunctionOperator` or a
    class defined outside mrirecon (:func:`~mrirecon.core.operator_check.holds_user_code`),
    whose tensors may live in closures or plain attributes: :func:`solve_proximal` then finds
    them through the autograd graph of one ``gram`` at the solution. (Only the registered
    tensors were taken before: a weight in a closure got a gradient 4.45 off, cosine -0.35.)
    """
    if holds_user_code(op):
        return None
    return [t for t in list(op.buffers()) + list(op.parameters()) if t.requires_grad]


def _check_lam(lam: Tensor) -> None:
    """A learned ``lam`` must be finite and ``>= 0``: nothing keeps an unconstrained parameter
    there, and with ``lam < 0`` the system ``A^H A + lam I`` is indefinite (a weight of -0.05
    gave 17.8 dB where 0.05 gives 43.7, -2 an all-zero image, without a word). One device sync
    per call; the shipped weights' ``lam`` is positive and their outputs are unchanged."""
    v = lam.detach()
    bad = ~(torch.isfinite(v) & (v >= 0))  # NaN compares False
    if bool(bad.any()):
        raise LearnedWeightError(f"ProximalDC: lam must be finite and >= 0 (the weight of ||x - z||^2 in "
                         f"the data consistency), got {float(v[bad].flatten()[0]):.4g}: training "
                         "drove the learned weight out of range (lower the learning rate), or "
                         "the weights file sets it so")


class ProximalDC(nn.Module):
    """``x = (A^H A + lam I)^{-1} (A^H y + lam z)`` with a learned ``lam`` (MoDL's DC layer).

    Parameters
    ----------
    lam
        Initial regularisation weight (MoDL starts at 0.05).
    learnable
        Learn ``lam`` (default) or keep it fixed.
    cg_iterations, tolerance
        CG settings (MoDL uses 10 iterations). ``cg_iterations`` was ``iterations`` before
        2026-12-07 (the vocabulary's inner-solve prefix, :mod:`mrirecon.core.names`; a block's
        ``iterations`` read as an unroll count): the old keyword (and ``max_iterations``) still
        works, with a ``FutureWarning``.
    implicit
        Backward by a second CG solve instead of storing iterations: the gradient of the
        *converged* proximal map (:mod:`mrirecon.solvers.implicit`), not of the ``cg_iterations``
        CG steps the forward ran, so it is exact only as far as CG converged (with the shipped
        MoDL models' 6-8 steps the weight gradients are 0.3-20 % from the exact gradient of
        the computed map). ``False``: autograd through the iterations (exact, memory grows with
        them).
    support
        Also constrain ``x`` to 0 outside the operator's image support (capability
        :class:`~mrirecon.core.HasImageSupport`: pixels no coil map covers, as ESPIRiT's ``crop``
        leaves them). There ``A`` sees nothing, so the plain proximal point returns ``z``
        unchanged: whatever the network put there survives. Because ``A P = A`` for the
        projection ``P`` onto the support, the constrained solution is the plain one at ``P z``.
        Operators without the capability, and maps without zeros, leave it the plain one.

    Notes
    -----
    The solve trusts ``op.gram`` to be ``A^H A`` and ``op.H`` to be ``A``'s adjoint. An operator
    holding a class defined outside mrirecon (or a :class:`~mrirecon.core.FunctionOperator`) is
    tested by :func:`~mrirecon.core.check_operator` the first time it is met (see
    :func:`~mrirecon.core.operator_check.check_operator_once`): a wrong adjoint or closed-form
    gram raises ``ValueError`` naming the operator instead of a wrong image. mrirecon's own
    operators are not tested here (no cost). With such an operator and ``implicit`` every call
    while autograd records applies ``op.gram`` once more, at the solution (how the implicit
    backward finds the tensors in its code, :func:`solve_proximal`): run inference under
    ``torch.no_grad()`` to avoid it.
    """

    @accepts_deprecated_names(iterations=("cg_iterations", None),
                              max_iterations=("cg_iterations", None))
    def __init__(
        self,
        lam: float = 0.05,
        learnable: bool = True,
        cg_iterations: int = 10,
        tolerance: float = 0.0,
        implicit: bool = True,
        support: bool = False,
    ) -> None:
        super().__init__()
        value = torch.tensor([float(lam)])
        if learnable:
            self.lam = nn.Parameter(value)
        else:
            self.register_buffer("lam", value)
        self.cg_iterations, self.tolerance, self.implicit = cg_iterations, tolerance, implicit
        self.support = bool(support)

    @property
    def iterations(self) -> int:
        """Deprecated name of :attr:`cg_iterations` (before 2026-12-07): reads and sets it, so
        ``model.dc.iterations = 20`` still changes the CG count (and ``save_model`` sees it)."""
        _renamed_attribute()
        return self.cg_iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        _renamed_attribute(stacklevel=4)  # through nn.Module.__setattr__
        self.cg_iterations = value

    def forward(
        self,
        z: Tensor,
        y: Tensor,
        op: LinearOperator,
        aty: Tensor | None = None,
        x0: Tensor | None = None,
    ) -> Tensor:
        """Images ``z`` ``(B, ...)`` (batch axis first), data ``y``: the proximal point ``x``."""
        check_operator_once(op, z)
        if aty is None:
            aty = op.H(y)
        if self.support:
            seen = capability(op, HasImageSupport)
            if seen is not None:
                z = z * seen.support
        _check_lam(self.lam)
        lam = self.lam.to(z.real.dtype)
        rhs = aty + lam * z
        return solve_proximal(
            op.gram,
            rhs,
            lam,
            iterations=self.cg_iterations,
            tolerance=self.tolerance,
            batch_dims=1 if rhs.ndim > 1 else 0,
            x0=x0,
            implicit=self.implicit,
            params=operator_tensors_with_grad(op) if self.implicit else (),
        )


def _renamed_attribute(stacklevel: int = 3) -> None:
    import warnings

    warnings.warn("ProximalDC.iterations is deprecated, use ProximalDC.cg_iterations (the CG "
                  "steps of the data-consistency solve)", FutureWarning, stacklevel=stacklevel)
