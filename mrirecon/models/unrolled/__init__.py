"""Unrolled reconstruction networks, all ``model(y, op) -> x`` over the shared operators."""

from mrirecon.models.unrolled.admm_csnet import ADMMCSNet, PiecewiseLinear
from mrirecon.models.unrolled.cascade import CascadeNet
from mrirecon.models.unrolled.density_weighted import DensityWeightedModel
from mrirecon.models.unrolled.fbpconvnet import FBPConvNet, initial_reconstruction
from mrirecon.models.unrolled.gram_varnet import GramVarNet
from mrirecon.models.unrolled.ista_net import ISTANetPlus, soft_threshold
from mrirecon.models.unrolled.learned_maps import LearnedMapsModel, NonCartesianSensitivityModel
from mrirecon.models.unrolled.modl import MoDL
from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual
from mrirecon.models.unrolled.staged_ct import PlainUNet, StagedCTNet
from mrirecon.models.unrolled.varnet import SensitivityModel, VarNet, VarNetBlock
from mrirecon.models.unrolled.vn import RBFActivation, VariationalNetwork

__all__ = [
    "ADMMCSNet",
    "CascadeNet",
    "DensityWeightedModel",
    "FBPConvNet",
    "GramVarNet",
    "ISTANetPlus",
    "LearnedMapsModel",
    "LearnedPrimalDual",
    "MoDL",
    "NonCartesianSensitivityModel",
    "PiecewiseLinear",
    "PlainUNet",
    "RBFActivation",
    "SensitivityModel",
    "StagedCTNet",
    "VarNet",
    "VarNetBlock",
    "VariationalNetwork",
    "initial_reconstruction",
    "soft_threshold",
]
