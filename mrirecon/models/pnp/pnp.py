"""Plug-and-play priors: PnP-ADMM, PnP-HQS (Venkatakrishnan 2013, Zhang 2017) and RED (Romano
2017) with any (trained) image denoiser as the prior and any LinearOperator as the physics.

The data step is the proximal map of ``0.5 ||A x - y||^2`` solved by CG on ``A^H A + rho I``
(:func:`~mrirecon.models.blocks.solve_proximal`, differentiable). The denoiser maps images
``(B, H, W)`` to images of the same shape and dtype (wrap a real CNN in
:class:`~mrirecon.models.backbones.ComplexImageCNN`). With ``normalize`` the data are scaled so
that ``max |A^H y| = 1`` (the range denoisers are trained on) and the result is scaled back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.models.blocks.cg_dc import operator_tensors_with_grad, solve_proximal
from mrirecon.models.template import UnrolledModel
from mrirecon.solvers.pnp import pnp_admm_step, pnp_hqs_step

Denoiser = Callable[[Tensor], Tensor]


class _PlugAndPlay(UnrolledModel):
    def __init__(self, denoiser: Denoiser, iterations: int, rho: float, cg_iterations: int, normalize: bool):
        super().__init__()
        if rho <= 0:
            raise ValueError(f"{type(self).__name__}: rho must be positive, got {rho}")
        self.denoiser = denoiser
        self.iterations, self.rho, self.cg_iterations, self.normalize = iterations, float(rho), cg_iterations, normalize

    def num_steps(self) -> int:
        return self.iterations

    def prox_data(self, v: Tensor, op: LinearOperator, aty: Tensor, rho: float | None = None) -> Tensor:
        """``argmin_x 0.5 ||A x - y||^2 + rho/2 ||x - v||^2`` by CG (``aty = A^H y``)."""
        rho = self.rho if rho is None else rho
        return solve_proximal(
            op.gram, aty + rho * v, rho, iterations=self.cg_iterations, batch_dims=1, x0=v,
            params=operator_tensors_with_grad(op),
        )


class PnPADMM(_PlugAndPlay):
    """PnP-ADMM: ``x = prox_f(z - u)``, ``z = D(x + u)``, ``u += x - z``; returns ``x``.

    Parameters
    ----------
    denoiser
        Image denoiser ``(B, H, W) -> (B, H, W)``.
    iterations
        ADMM iterations.
    rho
        ADMM penalty (the denoiser's implicit noise level is ``1 / sqrt(rho)`` in data units).
    cg_iterations
        CG iterations per data step.
    normalize
        Scale data so that ``max |A^H y| = 1``.
    """

    def __init__(self, denoiser: Denoiser, iterations: int = 20, rho: float = 1.0, cg_iterations: int = 10,
                 normalize: bool = True) -> None:
        super().__init__(denoiser, iterations, rho, cg_iterations, normalize)

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, z, u) = (A^H y, A^H y, 0)``."""
        return aty, aty, torch.zeros_like(aty)

    def step(self, i: int, state, y: Tensor, op: LinearOperator, aty: Tensor):
        """:func:`~mrirecon.solvers.pnp.pnp_admm_step` (CG data step started at ``z - u``)."""
        return pnp_admm_step(*state, lambda v, _x: self.prox_data(v, op, aty), self.denoiser)

    def output(self, state) -> Tensor:
        return state[0]


class PnPHQS(_PlugAndPlay):
    """PnP half-quadratic splitting: ``z = D(x)``, ``x = prox_f(z)``; returns ``x``.

    Parameters as :class:`PnPADMM`.
    """

    def __init__(self, denoiser: Denoiser, iterations: int = 20, rho: float = 1.0, cg_iterations: int = 10,
                 normalize: bool = True) -> None:
        super().__init__(denoiser, iterations, rho, cg_iterations, normalize)

    def step(self, i: int, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """:func:`~mrirecon.solvers.pnp.pnp_hqs_step` (CG data step started at ``z``)."""
        return pnp_hqs_step(x, lambda v, _x: self.prox_data(v, op, aty), self.denoiser)[0]


class RED(_PlugAndPlay):
    """Regularisation by denoising: minimise ``0.5 ||A x - y||^2 + lam/2 <x, x - D(x)>``.

    ``method="fixed_point"``: ``(A^H A + lam I) x = A^H y + lam D(x)`` solved by CG per iteration;
    ``method="gradient"``: ``x -= step (A^H (A x - y) + lam (x - D(x)))``.

    Parameters
    ----------
    denoiser
        Image denoiser ``(B, H, W) -> (B, H, W)``.
    iterations
        Outer iterations.
    lam
        Regularisation weight.
    method
        ``"fixed_point"`` or ``"gradient"``.
    step
        Gradient step (method ``"gradient"``); keep below ``2 / (||A||^2 + lam)``.
    cg_iterations, normalize
        As in :class:`PnPADMM`.
    """

    def __init__(self, denoiser: Denoiser, iterations: int = 20, lam: float = 0.1, method: str = "fixed_point",
                 step: float = 0.5, cg_iterations: int = 10, normalize: bool = True) -> None:
        super().__init__(denoiser, iterations, lam, cg_iterations, normalize)
        if method not in ("fixed_point", "gradient"):
            raise ValueError(f"RED: method must be 'fixed_point' or 'gradient', got {method!r}")
        self.method, self.step_size = method, float(step)

    def step(self, i: int, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """A fixed-point (CG) or gradient step, starting from ``A^H y``."""
        if self.method == "fixed_point":
            return self.prox_data(self.denoiser(x), op, aty)
        return x - self.step_size * (op.gram(x) - aty + self.rho * (x - self.denoiser(x)))
