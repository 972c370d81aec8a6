"""Physics operators for MRI and CT plus the generic operators the priors need."""

from mrirecon.operators.ct import FanBeam, ParallelBeam, ct_operator
from mrirecon.operators.generic import Diagonal, FiniteDifference, Identity, Wavelet
from mrirecon.operators.mri import (
    Fourier,
    Sampling,
    SenseOperator,
    Sensitivity,
    sense,
    single_coil,
)
from mrirecon.operators.nufft import NufftSense, nufft_sense, toeplitz_apply

__all__ = [
    "Diagonal",
    "FanBeam",
    "FiniteDifference",
    "Fourier",
    "Identity",
    "NufftSense",
    "ParallelBeam",
    "Sampling",
    "SenseOperator",
    "Sensitivity",
    "Wavelet",
    "ct_operator",
    "nufft_sense",
    "sense",
    "single_coil",
    "toeplitz_apply",
]
