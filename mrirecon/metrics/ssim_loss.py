"""Differentiable SSIM with the fastMRI constants, and the ``1 - SSIM`` training loss.

The definition is that of ``skimage.metrics.structural_similarity`` as fastMRI calls it
(uniform ``7 x 7`` window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariance ``NP / (NP - 1)``,
``NP = 49``, mean over the valid region, i.e. the image minus a 3-pixel border), which is
also what ``fastmri.losses.SSIMLoss`` computes with its valid convolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def ssim_map(
    x: Tensor,
    y: Tensor,
    data_range: Tensor | float,
    *,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Local SSIM over the valid region.

    Parameters
    ----------
    x, y
        Real images ``(..., H, W)`` of the same shape.
    data_range
        Dynamic range ``L`` of the data (e.g. the target's maximum): a scalar, or a tensor
        broadcastable to the leading shape ``(...)`` (one value per image).
    win_size
        Side of the uniform window (odd, ``<= min(H, W)``).
    k1, k2
        Stabilising constants; ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``.

    Returns
    -------
    Tensor
        ``(..., H - win_size + 1, W - win_size + 1)`` local SSIM values (the centres of the
        windows that fit in the image), differentiable in ``x`` and ``y``.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim_map: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim < 2 or x.is_complex() or y.is_complex():
        raise ValueError(f"ssim_map: expected real images (..., H, W), got {tuple(x.shape)} {x.dtype}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim_map: win_size must be odd and positive, got {win_size}")
    H, W = x.shape[-2:]
    if win_size > min(H, W):
        raise ValueError(f"ssim_map: win_size {win_size} exceeds image size {(H, W)}")
    np_ = win_size * win_size
    dtype = torch.promote_types(x.dtype, y.dtype)
    xb, yb = x.to(dtype), y.to(dtype)
    L = torch.as_tensor(data_range, dtype=dtype, device=x.device)
    L = torch.broadcast_to(L, x.shape[:-2])[..., None, None]

    def mean(t: Tensor) -> Tensor:
        # separable box filter over the valid windows: sums of win_size terms per axis
        t = t.unfold(-1, win_size, 1).sum(-1)
        return t.unfold(-2, win_size, 1).sum(-1) / np_

    cov_norm = np_ / (np_ - 1) if np_ > 1 else 1.0
    ux, uy = mean(xb), mean(yb)
    uxx, uyy, uxy = mean(xb * xb), mean(yb * yb), mean(xb * yb)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * L) ** 2
    c2 = (k2 * L) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


class SSIMLoss(nn.Module):
    """``1 - SSIM`` with the fastMRI constants (a drop-in for ``fastmri.losses.SSIMLoss``).

    Parameters
    ----------
    win_size, k1, k2
        Window side and constants (defaults 7, 0.01, 0.03).

    Call as ``loss(X, Y, data_range, reduced=True)`` with ``X``, ``Y`` real ``(B, C, H, W)``
    (or ``(B, H, W)``) and ``data_range`` ``(B,)``, one range per sample (fastMRI passes the
    target volume's maximum). ``reduced=True`` returns ``1 - mean(SSIM)`` (a scalar);
    otherwise the map ``1 - SSIM`` of shape ``(B, C, H - win + 1, W - win + 1)``.
    """

    def __init__(self, win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> None:
        super().__init__()
        self.win_size = int(win_size)
        self.k1, self.k2 = float(k1), float(k2)

    def extra_repr(self) -> str:
        return f"win_size={self.win_size}, k1={self.k1}, k2={self.k2}"

    def forward(self, X: Tensor, Y: Tensor, data_range: Tensor | float, reduced: bool = True) -> Tensor:
        if X.ndim not in (3, 4):
            raise ValueError(f"SSIMLoss: expected (B, C, H, W) or (B, H, W), got {tuple(X.shape)}")
        L = torch.as_tensor(data_range, dtype=X.dtype, device=X.device)
        if L.ndim == 1:
            if L.shape[0] != X.shape[0]:
                raise ValueError(
                    f"SSIMLoss: data_range has {L.shape[0]} values for a batch of {X.shape[0]}"
                )
            L = L.reshape((-1,) + (1,) * (X.ndim - 3))
        elif L.ndim != 0:
            raise ValueError(f"SSIMLoss: data_range must be a scalar or (B,), got {tuple(L.shape)}")
        s = ssim_map(X, Y, L, win_size=self.win_size, k1=self.k1, k2=self.k2)
        return 1 - s.mean() if reduced else 1 - s
