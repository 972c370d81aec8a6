"""Plug-and-play priors with a (trained) denoiser module: PnP-ADMM, PnP-HQS, RED, DPIR."""

from mrirecon.models.pnp.denoisers import NoiseLevelDenoiser
from mrirecon.models.pnp.dpir import PnPDPIR
from mrirecon.models.pnp.pnp import RED, PnPADMM, PnPHQS

__all__ = ["RED", "NoiseLevelDenoiser", "PnPADMM", "PnPDPIR", "PnPHQS"]
