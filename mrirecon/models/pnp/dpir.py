"""Plug-and-play HQS with a noise-level-conditioned denoiser and an annealed noise schedule
(DPIR, Zhang et al., IEEE TPAMI 2022), over any LinearOperator with exact data consistency.

Iteration ``k = 0 .. K-1`` with ``sigma_k`` geometric from ``sigma_max`` to ``sigma_min``::

    z = D(x, sigma_k)                                   (learned prior, bias-free CNN)
    x = argmin 0.5 ||A x - y||^2 + rho_k / 2 ||x - z||^2,   rho_k = lam / sigma_k^2   (CG)

Scaling (what makes the model transfer): the data are divided by ``s``, the 99.5th percentile
of ``|x0|`` for the regularised least-squares start ``x0 = (A^H A + rho_0 I)^{-1} A^H y``, so
``sigma`` and ``lam`` are relative to the image, not to the scanner's k-space units, the matrix
size, the coil count or the number of CT views. The operator is expected near unit norm (the
MRI SENSE operator with unit sum-of-squares maps is; CT pipelines pass ``A / ||A||``).

Scale equivariance: ``model(c y, op) = c model(y, op)`` for ``c > 0`` up to float rounding,
because everything the denoiser sees is divided by ``s``, which is proportional to the data:
``s`` has no floor (:func:`~mrirecon.models.common.sample_scale`; a 1e-12 floor froze the
output below it: 1.3e9 off at ``c = 1e-20``), and ``A^H y`` is first divided by the power of two
nearest above its peak (exact, so results are bit for bit those without it) so that the CG of
``x0`` neither underflows nor overflows float32: it holds from ``c = 1e-30`` to ``1e30``. An
all-zero ``A^H y`` gives 0 (the noise-level input made the denoiser return an image of its own
there). ``s`` is differentiable in ``y`` and in coil maps that require a gradient (except
inside :class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel`, whose network-made maps
get the stop-gradient of :func:`~mrirecon.models.common.scale_operator`). The CG solves are differentiated implicitly
(:func:`~mrirecon.models.blocks.solve_proximal`: the gradient of the *converged* solve), so
autograd's derivative is that of the computed map only as far as CG converged: along ``y``
itself ``pnp_dncnn_diverse`` (4 iterations, 10 / 8 CG steps, float64) is 3.9e-3 off (1.2e-14
with the iterations differentiated; 1.1, i.e. of the wrong sign, with the detached scale before).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.magnitude import sample_power_of_two
from mrirecon.core.operator_check import check_operator_once
from mrirecon.models.blocks.cg_dc import operator_tensors_with_grad, solve_proximal
from mrirecon.models.common import sample_scale, scale_operator, zero_blank
from mrirecon.models.input_checks import check_model_input
from mrirecon.models.init import seeded_init
from mrirecon.models.pnp.denoisers import NoiseLevelDenoiser
from mrirecon.solvers.pnp import pnp_hqs_step


def robust_scale(x: Tensor, q: float = 0.995) -> Tensor:
    """Per-sample ``q`` quantile of ``|x|`` over all axes but the first, shaped like ``x``, in
    ``x``'s precision (float64 stays float64); ``max |x|`` where it is 0, 1 for an all-zero
    sample: :func:`~mrirecon.models.common.sample_scale` (no floor, differentiable)."""
    return sample_scale(x, q)


def _check_schedule(iterations: int, sigma_min: float, sigma_max: float) -> None:
    if iterations < 1:
        raise ValueError(f"PnPDPIR: iterations must be >= 1, got {iterations}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"PnPDPIR: need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")


class PnPDPIR(nn.Module):
    """DPIR-style plug-and-play HQS ``model(y, op) -> x``.

    ``maps_scale_stop_gradient`` (attribute, default ``False``): compute the scale on detached
    coil maps (:func:`~mrirecon.models.common.scale_operator`; set by
    :class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel`).

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
    #: scale on detached coil maps (:func:`~mrirecon.models.common.request_maps_scale_stop_gradient`)
    maps_scale_stop_gradient = False

    def __init__(self, iterations: int = 12, sigma_max: float = 0.1, sigma_min: float = 0.01,
                 lam: float = 1e-4, cg_iterations: int = 8, init_rho: float = 0.01,
                 init_iterations: int = 10, depth: int = 8, features: int = 32,
                 init_seed: int | None = None) -> None:
        super().__init__()
        _check_schedule(iterations, sigma_min, sigma_max)
        if lam <= 0 or init_rho <= 0:
            raise ValueError(f"PnPDPIR: lam and init_rho must be positive, got {lam}, {init_rho}")
        with seeded_init(init_seed):
            self.denoiser = NoiseLevelDenoiser(depth=depth, features=features)
        self.iterations, self.sigma_max, self.sigma_min = iterations, float(sigma_max), float(sigma_min)
        self.lam, self.cg_iterations = float(lam), cg_iterations
        self.init_rho, self.init_iterations = float(init_rho), init_iterations

    def sigmas(self) -> list[float]:
        """The noise schedule ``sigma_0 .. sigma_{K-1}`` (geometric). The attributes are checked
        as the constructor checks them: set after building (a pipeline's table entry, a caller),
        ``sigma_min = 0`` failed on "math domain error", ``sigma_min > sigma_max`` ran a rising
        schedule."""
        _check_schedule(self.iterations, self.sigma_min, self.sigma_max)
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
        check_model_input("PnPDPIR", self, y, op, batch_ndim=2)
        check_operator_once(op, lambda: op.H(y))  # a user's operator, once; ours: a lookup
        aty = op.H(y)
        # an exact rescale (a power of two) before the first CG: its squares underflowed (1e-30)
        # or overflowed (1e30) float32 at the data's own scale
        p = sample_power_of_two(aty)
        aty = aty / p
        x0 = self._prox(op, aty, torch.zeros_like(aty), self.init_rho, self.init_iterations)
        sop = scale_operator(op, y, stop_maps_gradient=self.maps_scale_stop_gradient)
        s = robust_scale(x0 if sop is op else
                         self._prox(sop, sop.H(y) / p, torch.zeros_like(aty), self.init_rho,
                                    self.init_iterations))
        aty, x = aty / s, x0 / s
        for sigma in self.sigmas():  # HQS (mrirecon.solvers.pnp), CG started at z
            rho = self.lam / sigma**2
            x = pnp_hqs_step(x, lambda v, _x, r=rho: self._prox(op, aty, v, r, self.cg_iterations),
                             lambda v, s=sigma: self.denoiser(v, s))[0]
        return zero_blank(x * s * p, aty)
