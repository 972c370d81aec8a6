"""Plug-and-play HQS with a noise-level-conditioned denoiser and an annealed noise schedule
(DPIR, Zhang et al., IEEE TPAMI 2022), over any LinearOperator with exact data consistency.

Iteration ``k = 0 .. K-1`` with ``sigma_k`` geometric from ``sigma_max`` to ``sigma_min``::

    z = D(x, sigma_k)                                   (learned prior, bias-free CNN)
    x = argmin 0.5 ||A x - y||^2 + rho_k / 2 ||x - z||^2,   rho_k = lam / sigma_k^2   (CG)

Scaling (what makes the model transfer): the data are divided by ``s``, the 99.5th percentile
of ``|x0|`` for the regularised least-squares start ``x0 = (A^H A + rho_0 I)^{-1} A^H y``, so
``sigma`` and ``lam`` are relative to the image, not to the scanner's k-space units, the matrix
size, the coil count or the number of CT views. The operator is expected near unit norm (the
MRI SENSE operator with unit sum-of-squares maps is; CT pipelines pass ``A / ||A||``). Because
the denoiser is bias-free, ``model(c y, op) = c model(y, op)`` for ``c > 0`` holds exactly up to
rounding, whatever ``s`` is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.blocks.cg_dc import operator_tensors_with_grad, solve_proximal
from mrirecon.models.common import require_batch
from mrirecon.models.init import seeded_init
from mrirecon.models.pnp.denoisers import NoiseLevelDenoiser
from mrirecon.solvers.pnp import pnp_hqs_step


def robust_scale(x: Tensor, q: float = 0.995, eps: float = 1e-12) -> Tensor:
    """Per-sample ``q`` quantile of ``|x|`` over all axes but the first, shaped like ``x``."""
    a = x.detach().abs().reshape(x.shape[0], -1).float()
    s = torch.quantile(a, q, dim=1) if a.shape[1] <= 16_000_000 else a.amax(dim=1)
    s = s.clamp_min(eps).to(x.real.dtype if x.is_complex() else x.dtype)
    return s.reshape((-1,) + (1,) * (x.ndim - 1))


class PnPDPIR(nn.Module):
    """DPIR-style plug-and-play HQS ``model(y, op) -> x``.

    Parameters
    ----------
    iterations
        HQS iterations ``K``.
    sigma_max, sigma_min
        First and last denoiser noise level, relative to the image scale ``s``.
    lam
        Data-step weight: ``rho_k = lam / sigma_k^2``.
    cg_iterations
        CG iterations per data step (warm-started at ``z``).
    init_rho, init_iterations
        Tikhonov weight and CG iterations of the start ``x0`` (also used for the scale).
    depth, features
        Size of the :class:`~mrirecon.models.pnp.denoisers.NoiseLevelDenoiser`.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    """

    #: The denoiser never saw coil maps: use the pipeline's cropped ESPIRiT maps, not the
    #: whole-field-of-view maps end-to-end models were trained with (see ``run_bench``).
    full_fov_maps = False

    def __init__(self, iterations: int = 12, sigma_max: float = 0.1, sigma_min: float = 0.01,
                 lam: float = 1e-4, cg_iterations: int = 8, init_rho: float = 0.01,
                 init_iterations: int = 10, depth: int = 8, features: int = 32,
                 init_seed: int | None = None) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"PnPDPIR: iterations must be >= 1, got {iterations}")
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"PnPDPIR: need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        if lam <= 0 or init_rho <= 0:
            raise ValueError(f"PnPDPIR: lam and init_rho must be positive, got {lam}, {init_rho}")
        with seeded_init(init_seed):
            self.denoiser = NoiseLevelDenoiser(depth=depth, features=features)
        self.iterations, self.sigma_max, self.sigma_min = iterations, float(sigma_max), float(sigma_min)
        self.lam, self.cg_iterations = float(lam), cg_iterations
        self.init_rho, self.init_iterations = float(init_rho), init_iterations

    def sigmas(self) -> list[float]:
        """The noise schedule ``sigma_0 .. sigma_{K-1}`` (geometric)."""
        k = self.iterations
        if k == 1:
            return [self.sigma_min]
        r = math.log(self.sigma_min / self.sigma_max) / (k - 1)
        return [self.sigma_max * math.exp(r * i) for i in range(k)]

    def _prox(self, op: LinearOperator, aty: Tensor, v: Tensor, rho: float, iterations: int) -> Tensor:
        return solve_proximal(op.gram, aty + rho * v, rho, iterations=iterations, batch_dims=1,
                              x0=v, params=operator_tensors_with_grad(op))

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)`` in the units of ``y``."""
        require_batch("PnPDPIR", y)
        aty = op.H(y)
        x0 = self._prox(op, aty, torch.zeros_like(aty), self.init_rho, self.init_iterations)
        s = robust_scale(x0)
        aty, x = aty / s, x0 / s
        for sigma in self.sigmas():  # HQS (mrirecon.solvers.pnp), CG started at z
            rho = self.lam / sigma**2
            x = pnp_hqs_step(x, lambda v, _x, r=rho: self._prox(op, aty, v, r, self.cg_iterations),
                             lambda v, s=sigma: self.denoiser(v, s))[0]
        return x * s
