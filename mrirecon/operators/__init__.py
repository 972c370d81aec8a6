"""Physics operators for MRI and CT plus the generic operators the priors need (finite
differences, wavelets, patches, the TGV blocks)."""

from mrirecon.operators.ct import FanBeam, ParallelBeam, ct_operator
from mrirecon.operators.dense import DenseMatrix, gaussian_matrix
from mrirecon.operators.generic import (Diagonal, FiniteDifference, Identity, PhaseConstrained,
                                        Wavelet)
from mrirecon.operators.mri import (
    Fourier,
    Sampling,
    SenseOperator,
    Sensitivity,
    sense,
    single_coil,
)
from mrirecon.operators.nufft import NufftSense, nufft_sense, toeplitz_apply
from mrirecon.operators.patches import Patches
from mrirecon.operators.tgv import SymmetrizedGradient, TGVBlock, TGVSplit

__all__ = [
    "DenseMatrix",
    "Diagonal",
    "FanBeam",
    "FiniteDifference",
    "Fourier",
    "Identity",
    "NufftSense",
    "ParallelBeam",
    "Patches",
    "PhaseConstrained",
    "Sampling",
    "SenseOperator",
    "Sensitivity",
    "SymmetrizedGradient",
    "TGVBlock",
    "TGVSplit",
    "Wavelet",
    "ct_operator",
    "gaussian_matrix",
    "nufft_sense",
    "sense",
    "single_coil",
    "toeplitz_apply",
]
