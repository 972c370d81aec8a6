"""Centred, orthonormal 2-D Fourier transforms over the last two axes (the only copy).

``fft2c(x) = fftshift(fft2(ifftshift(x)))`` with ``norm="ortho"``, so ``ifft2c`` is its exact
inverse and adjoint. The k-space centre (DC) sits at index ``N // 2`` along each axis, as in
fastMRI files.
"""

from __future__ import annotations

import torch
from torch import Tensor

_DIMS = (-2, -1)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT of a complex tensor ``(..., H, W)``."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D inverse FFT of a complex tensor ``(..., H, W)``."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.ifft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def uncentred_fft2(x: Tensor) -> Tensor:
    """Orthonormal FFT without shifts (used where the shifts cancel, e.g. in a gram)."""
    return torch.fft.fft2(x, dim=_DIMS, norm="ortho")


def uncentred_ifft2(x: Tensor) -> Tensor:
    """Orthonormal inverse FFT without shifts."""
    return torch.fft.ifft2(x, dim=_DIMS, norm="ortho")
