"""Plug-and-play priors with a (trained) denoiser module: PnP-ADMM, PnP-HQS, RED."""

from mrirecon.models.pnp.pnp import RED, PnPADMM, PnPHQS

__all__ = ["PnPADMM", "PnPHQS", "RED"]
