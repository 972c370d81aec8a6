"""Learned reconstruction models: every model is ``model(y, op) -> x`` over the shared operators.

- :mod:`~mrirecon.models.blocks`: data-consistency layers (gradient step, CG proximal step,
  E2E-VarNet soft k-space DC, hard projection).
- :mod:`~mrirecon.models.backbones`: U-Net (fastMRI-compatible), NormUnet, DnCNN, ResNet.
- :mod:`~mrirecon.models.unrolled`: VarNet, VN, MoDL, ADMM-CSNet, ISTA-Net+, deep cascade,
  learned primal-dual, FBPConvNet.
- :mod:`~mrirecon.models.pnp`: PnP-ADMM, PnP-HQS, RED.
"""

from mrirecon.models.backbones import ComplexImageCNN, DnCNN, NormUnet, ResNet, Unet
from mrirecon.models.blocks import GradientDC, HardProjectionDC, ProximalDC, SoftKspaceDC, solve_proximal
from mrirecon.models.convert import fastmri_varnet_state_dict
from mrirecon.models.inference import reconstruct_slices
from mrirecon.models.pnp import RED, PnPADMM, PnPHQS
from mrirecon.models.registry import MODEL_DEFAULTS, available_models, build_model
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
    "VarNet",
    "VariationalNetwork",
    "available_models",
    "build_model",
    "solve_proximal",
    "fastmri_varnet_state_dict",
    "reconstruct_slices",
]
