"""Physics operators for MRI and CT plus the generic operators the priors need."""

from mrirecon.operators.generic import Diagonal, FiniteDifference, Identity, Wavelet
from mrirecon.operators.mri import (
    Fourier,
    Sampling,
    SenseOperator,
    Sensitivity,
    sense,
    single_coil,
)

__all__ = [
    "Diagonal",
    "FiniteDifference",
    "Fourier",
    "Identity",
    "Sampling",
    "SenseOperator",
    "Sensitivity",
    "Wavelet",
    "sense",
    "single_coil",
]
