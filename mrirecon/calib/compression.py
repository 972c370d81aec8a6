"""Coil compression: SVD/PCA compression and geometric coil compression (GCC).

- :func:`svd_compress` (Buehrer et al. 2007, Huang et al. 2008): one unitary coil mixing for the
  whole data set, the principal components of the coil covariance.
- :func:`gcc_compress` (Zhang, Pauly, Vasanawala, Lustig, MRM 69:571-582, 2013): for Cartesian
  data the readout is fully sampled, so after an inverse FFT along it every readout position
  ``x`` is a separate problem and gets its own compression matrix (from the calibration
  columns, over a sliding window of ``window`` positions). Consecutive matrices are then
  *aligned* (unitary Procrustes rotation of each ``x`` onto its neighbour, outwards from the
  centre) so that the virtual coils vary smoothly along ``x`` and stay compact in k-space.

Conventions: k-space ``(coils, H, W)`` centred (:func:`mrirecon.functional.fft2c`), readout
along H (fastMRI), phase encoding (undersampled) along W. A compression matrix ``M`` of shape
``(virtual, coils)`` maps ``y = M x``; its rows are orthonormal, so ``M^H y`` is the
least-squares decompression.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.calib._linalg import box_smooth
from mrirecon.core.checks import finite_and_nonzero
from mrirecon.functional import fft2c, ifft2c


def _check(name: str, kspace: Tensor, num_virtual: int, ndim: int | None = None) -> None:
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.ndim < 2:
        got = tuple(kspace.shape) if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"{name}: kspace must be a complex tensor (coils, ...), got {got}")
    if ndim is not None and kspace.ndim != ndim:
        raise ValueError(f"{name}: kspace must have shape (coils, H, W), got {tuple(kspace.shape)}")
    if not 1 <= num_virtual <= kspace.shape[0]:
        raise ValueError(
            f"{name}: num_virtual must be in [1, {kspace.shape[0]}], got {num_virtual}"
        )


def _check_finite(name: str, data: Tensor, what: str) -> None:
    """Refuse NaN / Inf in ``data`` ``(coils, ...)``, naming the coils: the covariance's
    eigendecomposition failed with a raw ``LinAlgError`` ("failed to converge ...")."""
    if finite_and_nonzero(data)[0]:
        return
    bad = (~torch.isfinite(data)).reshape(data.shape[0], -1)
    coils = bad.any(-1).nonzero().flatten().tolist()
    n = int(bad.sum())
    raise ValueError(f"{name}: {what} holds {n} NaN or Inf sample{'s' * (n > 1)} (coil"
                     f"{'s' * (len(coils) > 1)} {', '.join(map(str, coils))})")


def _fix_phase(vecs: Tensor) -> Tensor:
    """Make the largest-magnitude entry of every column real positive (deterministic output)."""
    idx = torch.argmax(torch.abs(vecs), dim=-2, keepdim=True)
    lead = torch.gather(vecs, -2, idx)
    return vecs * torch.sgn(lead).conj()


def _principal(cov: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of Hermitian ``(..., c, c)`` matrices, in descending order."""
    vals, vecs = torch.linalg.eigh(cov)
    return vals.flip(-1)[..., :k], vecs.flip(-1)[..., :k]


def svd_compress(
    kspace: Tensor, num_virtual: int, *, calib: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Compress coils to ``num_virtual`` principal virtual coils.

    Parameters
    ----------
    kspace
        Data ``(coils, ...)`` (k-space or images; the mixing commutes with any per-coil linear
        transform), complex.
    num_virtual
        Number of virtual coils kept (``1 <= num_virtual <= coils``).
    calib
        Data ``(coils, ...)`` to estimate the covariance from (default: ``kspace`` itself),
        e.g. the fully sampled centre.

    Returns
    -------
    compressed : Tensor
        ``(num_virtual, ...)``, virtual coils in decreasing energy order.
    matrix : Tensor
        ``(num_virtual, coils)`` with orthonormal rows; ``compressed = matrix @ kspace`` over
        the coil axis, ``matrix.mH @ compressed`` is the least-squares decompression (exact when
        ``num_virtual == coils``).
    """
    _check("svd_compress", kspace, num_virtual)
    src = kspace if calib is None else calib
    if src.shape[0] != kspace.shape[0]:
        raise ValueError(
            f"svd_compress: calib has {src.shape[0]} coils, kspace has {kspace.shape[0]}"
        )
    _check_finite("svd_compress", kspace, "kspace")
    if calib is not None:
        _check_finite("svd_compress", calib, "calib")
    x = src.reshape(src.shape[0], -1).to(torch.complex128)
    _, vecs = _principal(x @ x.mH, num_virtual)
    matrix = _fix_phase(vecs).mH.to(kspace.dtype)
    compressed = torch.tensordot(matrix, kspace, dims=([1], [0]))
    return compressed, matrix


def _align(mats: Tensor, start: int) -> Tensor:
    """Rotate each ``(c, v)`` basis onto its neighbour (Procrustes), outwards from ``start``."""
    out = mats.clone()
    order = list(range(start + 1, mats.shape[0])) + list(range(start - 1, -1, -1))
    for x in order:
        prev = out[x - 1] if x > start else out[x + 1]
        u, _, vh = torch.linalg.svd(mats[x].mH @ prev)
        out[x] = mats[x] @ (u @ vh)
    return out


def gcc_matrices(calib: Tensor, num_virtual: int, window: int = 5, align: bool = True) -> Tensor:
    """Per-readout-position GCC matrices from calibration k-space.

    Parameters
    ----------
    calib
        Fully sampled calibration k-space ``(coils, H, w)`` (all readout samples, a band of
        phase-encoding columns).
    num_virtual
        Virtual coils per readout position.
    window
        Readout positions pooled (box, symmetric at the edges) into each covariance.
    align
        Apply the Procrustes alignment along the readout (starting at ``H // 2``).

    Returns
    -------
    Tensor
        ``(H, num_virtual, coils)``; row ``x`` compresses readout position ``x``.
    """
    _check("gcc_matrices", calib, num_virtual, ndim=3)
    if window < 1:
        raise ValueError(f"gcc_matrices: window must be >= 1, got {window}")
    _check_finite("gcc_matrices", calib, "calib")
    # ifft2c = ifft along the readout (the hybrid space GCC needs) times a unitary transform
    # along the calibration columns, which leaves the per-position covariance unchanged.
    hybrid = ifft2c(calib.to(torch.complex128))
    cov = torch.einsum("cxw,dxw->cdx", hybrid, hybrid.conj())
    cov = box_smooth(cov, window, dims=(-1,)).permute(2, 0, 1)  # (H, c, c)
    _, vecs = _principal(cov, num_virtual)  # (H, c, v)
    vecs = _fix_phase(vecs)
    if align:
        vecs = _align(vecs, calib.shape[1] // 2)
    return vecs.mH.to(calib.dtype)


def gcc_compress(
    kspace: Tensor,
    num_virtual: int,
    calib: Tensor | int = 24,
    *,
    window: int = 5,
    align: bool = True,
) -> tuple[Tensor, Tensor]:
    """Geometric coil compression along the readout (H) axis.

    Parameters
    ----------
    kspace
        Centred k-space ``(coils, H, W)``, complex, zero where not acquired (any W pattern).
    num_virtual
        Virtual coils kept.
    calib
        Calibration k-space ``(coils, H, w)``, or the width of the fully sampled central band
        of columns of ``kspace`` to use (columns ``W // 2 - w // 2`` onwards).
    window, align
        See :func:`gcc_matrices`.

    Returns
    -------
    compressed : Tensor
        ``(num_virtual, H, W)``; zero exactly where ``kspace`` was zero in every coil.
    matrices : Tensor
        ``(H, num_virtual, coils)`` orthonormal rows; in hybrid space
        ``y[:, x, ky] = matrices[x] @ data[:, x, ky]``.
    """
    _check("gcc_compress", kspace, num_virtual, ndim=3)
    _check_finite("gcc_compress", kspace, "kspace")
    if isinstance(calib, int):
        W = kspace.shape[-1]
        if not 0 < calib <= W:
            raise ValueError(f"gcc_compress: calibration width must be in [1, {W}], got {calib}")
        left = W // 2 - calib // 2
        calib = kspace[..., left : left + calib]
    if calib.ndim != 3 or calib.shape[:2] != kspace.shape[:2]:
        raise ValueError(
            f"gcc_compress: calib must have shape ({kspace.shape[0]}, {kspace.shape[1]}, w), got {tuple(calib.shape)}"
        )
    mats = gcc_matrices(calib, num_virtual, window=window, align=align).to(kspace.dtype)
    return gcc_apply(kspace, mats), mats


def gcc_apply(kspace: Tensor, matrices: Tensor) -> Tensor:
    """Compress ``kspace`` ``(coils, H, W)`` with GCC ``matrices`` ``(H, virtual, coils)``
    (:func:`gcc_compress`, :func:`gcc_matrices`), e.g. a separate reference scan with the
    imaging data's matrices; ``(virtual, H, W)``, zero exactly where ``kspace`` was zero in
    every coil."""
    if kspace.ndim != 3 or matrices.ndim != 3 or matrices.shape[0] != kspace.shape[1] \
            or matrices.shape[2] != kspace.shape[0]:
        raise ValueError(f"gcc_apply: matrices {tuple(matrices.shape)} do not fit k-space "
                         f"{tuple(kspace.shape)} (need (H, virtual, coils))")
    # the per-readout mixing commutes with the transform along W, so compress in image space
    img = ifft2c(kspace)
    out = fft2c(torch.einsum("xvc,cxy->vxy", matrices.to(kspace.dtype), img))
    acquired = (kspace != 0).any(dim=0)
    return out * acquired
