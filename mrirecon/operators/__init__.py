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

__all__ = [
    "Diagonal",
    "FanBeam",
    "FiniteDifference",
    "Fourier",
    "Identity",
    "ParallelBeam",
    "Sampling",
    "SenseOperator",
    "Sensitivity",
    "Wavelet",
    "ct_operator",
    "sense",
    "single_coil",
]
