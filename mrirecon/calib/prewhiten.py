"""Noise prewhitening: decorrelate the receive channels and give them unit noise variance.

With the noise covariance ``Psi = L L^H`` (Cholesky), ``L^-1 y`` has noise covariance
identity (``E[n n^H] = I``, i.e. unit *complex* variance per channel; ISMRMRD tools scale
by an extra ``sqrt(2)`` to get unit variance per real/imaginary part). Prewhitened data can
then be reconstructed as if the coils had independent unit-variance noise; the coil maps
must be estimated from (or transformed with) the same whitened data.
"""

from __future__ import annotations

import torch
from torch import Tensor


def noise_covariance(noise: Tensor) -> Tensor:
    """Sample noise covariance ``noise noise^H / (samples - 1)``.

    Parameters
    ----------
    noise
        Noise-only samples ``(coils, ...)`` (e.g. a noise pre-scan ``(coils, samples)``),
        complex, zero mean by assumption (the mean is not removed).

    Returns
    -------
    Tensor
        Hermitian positive semi-definite ``(coils, coils)``.
    """
    if not isinstance(noise, Tensor) or noise.ndim < 2 or not noise.is_complex():
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(
            f"noise_covariance: noise must be a complex tensor (coils, samples), got {got}"
        )
    x = noise.reshape(noise.shape[0], -1)
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"noise_covariance: need at least 2 noise samples per coil, got {n}")
    return (x @ x.mH) / (n - 1)


def whitening_matrix(cov: Tensor) -> Tensor:
    """Lower-triangular ``W = L^-1`` with ``cov = L L^H``, so ``W cov W^H = I``.

    Parameters
    ----------
    cov
        Hermitian positive definite noise covariance ``(coils, coils)``.
    """
    _check_cov(cov)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError(
            f"whitening_matrix: noise covariance is not positive definite (failed at {int(info)})"
        )
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def _check_cov(cov: Tensor) -> None:
    if not isinstance(cov, Tensor) or cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        got = tuple(cov.shape) if isinstance(cov, Tensor) else type(cov).__name__
        raise ValueError(f"prewhiten: covariance must be a square (coils, coils) tensor, got {got}")


def prewhiten(kspace: Tensor, cov: Tensor | None = None, *, noise: Tensor | None = None) -> Tensor:
    """Prewhiten multi-channel data with the Cholesky factor of the noise covariance.

    Parameters
    ----------
    kspace
        Data ``(coils, ...)`` (k-space, images or noise), complex.
    cov
        Noise covariance ``(coils, coils)``; give exactly one of ``cov`` and ``noise``.
    noise
        Noise samples ``(coils, ...)``; the covariance is :func:`noise_covariance` of them.

    Returns
    -------
    Tensor
        ``L^-1 kspace`` over the coil axis, same shape and dtype as ``kspace``.
    """
    if (cov is None) == (noise is None):
        raise ValueError("prewhiten: give exactly one of cov= and noise=")
    if cov is None:
        cov = noise_covariance(noise)
    _check_cov(cov)
    c = kspace.shape[0]
    if cov.shape[0] != c:
        raise ValueError(f"prewhiten: covariance is for {cov.shape[0]} coils, data has {c} coils")
    chol, info = torch.linalg.cholesky_ex(cov.to(kspace.dtype))
    if int(info) != 0:
        raise ValueError(
            f"prewhiten: noise covariance is not positive definite (failed at {int(info)})"
        )
    flat = kspace.reshape(c, -1)
    return torch.linalg.solve_triangular(chol, flat, upper=False).reshape(kspace.shape)
