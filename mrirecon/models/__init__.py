"""Learned reconstruction models: every model is ``model(y, op) -> x`` over the shared operators.

- :mod:`~mrirecon.models.blocks`: data-consistency layers (gradient step, CG proximal step,
  E2E-VarNet soft k-space DC, hard projection).
- :mod:`~mrirecon.models.backbones`: U-Net (fastMRI-compatible), NormUnet, DnCNN, ResNet.
- :mod:`~mrirecon.models.unrolled`: VarNet, VN, MoDL, ADMM-CSNet, ISTA-Net+, deep cascade,
  learned primal-dual, FBPConvNet.
- :mod:`~mrirecon.models.pnp`: PnP-ADMM, PnP-HQS, RED.
- :mod:`~mrirecon.models.template`: :class:`UnrolledModel`, the one ``forward`` skeleton (check
  the batch, normalise, iterate, rescale) of the unrolled and plug-and-play models.
- :mod:`~mrirecon.models.output`: the output contract (every model returns the image, complex
  for MRI) and the named steps after it (:func:`magnitude`, :func:`rss_image`).
- :mod:`~mrirecon.models.init`: :func:`seeded_init`, behind every model's ``init_seed``.
"""

from mrirecon.models.backbones import ComplexImageCNN, DnCNN, NormUnet, ResNet, Unet
from mrirecon.models.blocks import (
    GradientDC,
    HardProjectionDC,
    ProximalDC,
    SoftKspaceDC,
    solve_proximal,
)
from mrirecon.models.convert import fastmri_varnet_state_dict
from mrirecon.models.inference import reconstruct_slices
from mrirecon.models.init import seeded_init
from mrirecon.models.output import magnitude, rss_image
from mrirecon.models.pnp import RED, PnPADMM, PnPHQS
from mrirecon.models.registry import MODEL_DEFAULTS, available_models, build_model
from mrirecon.models.template import UnrolledModel
from mrirecon.models.unrolled import (
    ADMMCSNet,
    CascadeNet,
    FBPConvNet,
    ISTANetPlus,
    LearnedPrimalDual,
    MoDL,
    SensitivityModel,
    VariationalNetwork,
    VarNet,
)

__all__ = [
    "ADMMCSNet",
    "CascadeNet",
    "ComplexImageCNN",
    "DnCNN",
    "FBPConvNet",
    "GradientDC",
    "HardProjectionDC",
    "ISTANetPlus",
    "LearnedPrimalDual",
    "MODEL_DEFAULTS",
    "MoDL",
    "NormUnet",
    "PnPADMM",
    "PnPHQS",
    "ProximalDC",
    "RED",
    "ResNet",
    "SensitivityModel",
    "SoftKspaceDC",
    "Unet",
    "UnrolledModel",
    "VarNet",
    "VariationalNetwork",
    "available_models",
    "build_model",
    "solve_proximal",
    "fastmri_varnet_state_dict",
    "magnitude",
    "reconstruct_slices",
    "rss_image",
    "seeded_init",
]
