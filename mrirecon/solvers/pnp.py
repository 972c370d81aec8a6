"""The plug-and-play splitting iterations, once: PnP-ADMM and PnP-HQS steps over callables.

Both the learned plug-and-play models (:mod:`mrirecon.models.pnp`, a CNN denoiser, fixed
penalty) and the classical non-local ones (:mod:`mrirecon.recon.nonlocal_pnp`, NLM / BM3D with
parameter continuation) run these steps; they differ only in the callables they pass:

- ``prox(v, x)``: the data step ``argmin_t 0.5 ||A t - y||^2 + rho/2 ||t - v||^2``; ``x`` is
  the current iterate (a warm start the caller may use or ignore);
- ``denoise(v)``: the prior's step (a denoiser at the current noise level).

ADMM (scaled form, Venkatakrishnan et al. 2013)::

    x = prox(z - u, x);  z = denoise(x + u);  u = (u + x - z) / gamma

``gamma`` is the continuation factor of the penalty (``rho_{k+1} = gamma rho_k`` rescales the
scaled dual ``u = lambda / rho``; Chan, Wang & Elgendy 2017); ``1`` is plain ADMM.

HQS (half-quadratic splitting, Zhang et al. 2017)::

    z = denoise(x);  x = prox(z, x)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Prox = Callable[[Tensor, Tensor], Tensor]
Denoise = Callable[[Tensor], Tensor]


def pnp_admm_step(x: Tensor, z: Tensor, u: Tensor, prox: Prox, denoise: Denoise,
                  gamma: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """One scaled-form PnP-ADMM iteration; returns the new ``(x, z, u)``."""
    x = prox(z - u, x)
    z = denoise(x + u)
    u = u + x - z
    if gamma != 1.0:
        u = u / gamma
    return x, z, u


def pnp_hqs_step(x: Tensor, prox: Prox, denoise: Denoise) -> tuple[Tensor, Tensor]:
    """One PnP-HQS iteration; returns the new ``(x, z)``."""
    z = denoise(x)
    return prox(z, x), z
