"""Adaptive coil combination from coil images: Walsh's method and Inati's fast iteration.

- Walsh et al., MRM 43:682-690 (2000): per pixel, the dominant eigenvector of the coil
  covariance ``x x^H`` averaged over a ``smoothing`` box is the (relative) sensitivity.
- Inati, Hansen, Kellman, ISMRM 2014 p. 4407 ("A fast optimal method for coil sensitivity
  estimation and adaptive coil combination for complex images"): alternate between the
  combined image ``rho`` and maps ``box(x conj(rho))`` normalised per pixel, with a global
  phase reference that keeps the maps' phase spatially smooth. Never forms the covariance.

Both take coil images ``(coils, H, W)`` (e.g. ``ifft2c`` of low-resolution k-space) and return
maps with unit sum of squares over coils, so ``sum_c conj(S_c) x_c`` is the optimal combination.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.calib._linalg import box_smooth, power_iteration, symmetric_index
from mrirecon.core.checks import finite_and_nonzero, nonfinite_count
from mrirecon.functional import coil_combine


def _check(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or not images.is_complex() or images.ndim != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name}: coil_images must be a complex tensor (coils, H, W), got {got}")
    if not finite_and_nonzero(images)[0]:  # one NaN pixel gave NaN maps over its box
        bad = nonfinite_count(images)
        raise ValueError(f"{name}: coil_images hold {bad} NaN or Inf value{'s' * (bad > 1)}")


def walsh_maps(
    coil_images: Tensor,
    smoothing: int = 5,
    niter: int = 10,
    *,
    reference_coil: int | None = None,
    chunk_rows: int = 32,
) -> Tensor:
    """Walsh adaptive sensitivity maps.

    Parameters
    ----------
    coil_images
        Complex coil images ``(coils, H, W)``.
    smoothing
        Side of the box (pixels) over which the covariance ``x x^H`` is averaged
        (edges half-sample symmetric, as ``scipy.ndimage.uniform_filter``).
    niter
        Power-method steps per pixel (from the all-ones vector).
    reference_coil
        Coil whose phase is removed from every map (default: the coil with the most energy),
        so the combined image keeps that coil's phase.
    chunk_rows
        Image rows processed together; memory ``~ (chunk_rows + smoothing) * W * coils^2``.

    Returns
    -------
    Tensor
        Maps ``(coils, H, W)`` with unit sum of squares over coils (zero where the image is 0).
    """
    _check("walsh_maps", coil_images)
    c, H, W = coil_images.shape
    if smoothing < 1 or niter < 1 or chunk_rows < 1:
        raise ValueError(
            f"walsh_maps: smoothing, niter, chunk_rows must be >= 1, got {smoothing}, {niter}, {chunk_rows}"
        )
    if reference_coil is None:
        reference_coil = int(torch.argmax(torch.sum(torch.abs(coil_images) ** 2, dim=(-2, -1))))
    if not 0 <= reference_coil < c:
        raise ValueError(f"walsh_maps: reference_coil must be in [0, {c}), got {reference_coil}")
    before, after = smoothing // 2, smoothing - 1 - smoothing // 2
    rows_ext = symmetric_index(H, before, after, coil_images.device)  # padded row -> image row
    maps = coil_images.new_zeros((H, W, c))
    for r0 in range(0, H, chunk_rows):
        r1 = min(H, r0 + chunk_rows)
        x = coil_images[:, rows_ext[r0 : r1 + before + after]]  # rows with their halo
        cov = x[:, None] * x[None].conj()  # (c, c, rows + smoothing - 1, W)
        cov = box_smooth(cov, smoothing, dims=(-1,))
        cov = cov.unfold(2, smoothing, 1).sum(-1) / smoothing  # (c, c, r1 - r0, W)
        mats = cov.permute(2, 3, 0, 1).reshape(-1, c, c)
        vec, _ = power_iteration(mats, niter)
        maps[r0:r1] = vec.reshape(r1 - r0, W, c)
    maps = maps.permute(2, 0, 1)
    return (maps * torch.sgn(maps[reference_coil]).conj()).contiguous()


def inati_combine(
    coil_images: Tensor,
    smoothing: int = 5,
    niter: int = 5,
    thresh: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Inati's iterative adaptive combination: combined image and sensitivity maps.

    Parameters
    ----------
    coil_images
        Complex coil images ``(coils, H, W)``.
    smoothing
        Side of the box (pixels) used to smooth ``x conj(rho)``.
    niter
        Maximum number of iterations.
    thresh
        Stop when ``||rho_new - rho_old|| / ||rho_new|| < thresh`` (0: run all iterations).

    Returns
    -------
    combined : Tensor
        ``sum_c conj(S_c) x_c``, shape ``(H, W)``.
    maps : Tensor
        ``(coils, H, W)``, unit sum of squares over coils, spatially smooth phase.
    """
    _check("inati_combine", coil_images)
    if smoothing < 1 or niter < 1:
        raise ValueError(
            f"inati_combine: smoothing and niter must be >= 1, got {smoothing}, {niter}"
        )
    x = coil_images
    real = x.real.dtype
    eps = torch.finfo(real).eps * torch.abs(x).mean()
    v = x.sum(dim=(-2, -1))
    v = v / torch.linalg.vector_norm(v)
    rho = torch.einsum("c,chw->hw", v.conj(), x)
    maps = x
    for _ in range(niter):
        prev = rho
        smooth = box_smooth(x * rho.conj(), smoothing)
        maps = smooth / (torch.sqrt(torch.sum(torch.abs(smooth) ** 2, dim=0)) + eps)
        rho = coil_combine(x, maps)
        # global phase reference: the coil combination v that best explains maps * rho
        v = torch.sum(maps * rho, dim=(-2, -1))
        v = v / torch.linalg.vector_norm(v)
        ref = torch.einsum("c,chw->hw", v.conj(), maps)
        phase = ref / (torch.abs(ref) + eps)
        rho = rho * phase
        maps = maps * phase.conj()
        if thresh > 0 and torch.linalg.vector_norm(rho - prev) < thresh * torch.linalg.vector_norm(
            rho
        ):
            break
    return coil_combine(x, maps), maps
