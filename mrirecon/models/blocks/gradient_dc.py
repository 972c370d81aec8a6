"""Gradient-step data consistency: ``x - eta * A^H (A x - y)`` with a learned step ``eta``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.operator_check import check_operator_once


class GradientDC(nn.Module):
    """One gradient step on ``0.5 ||A x - y||^2`` with a learned (real) step size.

    Parameters
    ----------
    eta
        Initial step size.
    learnable
        Make ``eta`` a parameter (default) or a fixed buffer.

    Notes
    -----
    Uses ``A.gram`` (closed form where the operator has one) and ``A^H y``; pass ``aty`` to
    reuse a precomputed ``A^H y`` across cascades.

    A wrong adjoint or closed-form gram makes the steps diverge or settle on a wrong image
    without a word, so an operator holding a class defined outside mrirecon (or a
    :class:`~mrirecon.core.FunctionOperator`) is tested by
    :func:`~mrirecon.core.check_operator` the first time it is met; mrirecon's own operators
    are not (no cost).
    """

    def __init__(self, eta: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        value = torch.tensor([float(eta)])
        if learnable:
            self.eta = nn.Parameter(value)
        else:
            self.register_buffer("eta", value)

    def residual_gradient(self, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor | None = None) -> Tensor:
        """``A^H (A x - y)`` for images ``x`` in the domain and data ``y`` in the range."""
        check_operator_once(op, x)
        if aty is None:
            aty = op.H(y)
        return op.gram(x) - aty

    def forward(self, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor | None = None) -> Tensor:
        """``x - eta * A^H (A x - y)``; same shape and dtype as ``x``."""
        return x - self.eta.to(x.real.dtype) * self.residual_gradient(x, y, op, aty)
