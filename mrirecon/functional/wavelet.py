"""Orthogonal, periodised 2-D discrete wavelet transform in torch.

Filters come from PyWavelets (a SigPy dependency) so that every Daubechies/Symlet/Coiflet
name works; only the coefficients are taken, the transform itself is torch (differentiable,
batched, any device). With periodic extension and even lengths at each level the transform is
an orthogonal matrix, so the adjoint is the inverse.

Coefficients are stored in one array of the input's (padded) shape: the approximation of the
coarsest level in the top-left corner, details around it (the usual "coefficient image").
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=32)
def wavelet_filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Decomposition (low, high) filters of an orthogonal wavelet, e.g. ``"db4"``."""
    import pywt

    w = pywt.Wavelet(name)
    if not w.orthogonal:
        raise ValueError(f"wavelet {name!r} is not orthogonal; use e.g. 'haar', 'db4', 'sym8'")
    return tuple(w.dec_lo[::-1]), tuple(w.dec_hi[::-1])


def _bank(name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    lo, hi = wavelet_filters(name)
    return torch.tensor([lo, hi], dtype=dtype, device=device).unsqueeze(1)  # (2, 1, L)


def _as_real_rows(x: Tensor) -> tuple[Tensor, bool]:
    if x.is_complex():
        return torch.view_as_real(x).movedim(-1, 0), True
    return x, False


def _analysis_1d(x: Tensor, bank: Tensor) -> Tensor:
    """One periodic analysis step along the last axis: ``(..., N) -> (..., N)`` = [lo | hi]."""
    shape = x.shape
    n, L = shape[-1], bank.shape[-1]
    # align with PyWavelets' "periodization" mode: a[k] = sum_j lo[j] x[(2k + L/2 - j) mod n]
    rows = torch.roll(x.reshape(-1, 1, n), L // 2 - 1, dims=-1)
    rows = torch.cat([rows, rows[..., : L - 1]], dim=-1) if L > 1 else rows
    # repeat the periodic extension when the filter is longer than the signal
    while rows.shape[-1] < n + L - 1:
        rows = torch.cat([rows, rows[..., : n + L - 1 - rows.shape[-1]]], dim=-1)
    out = F.conv1d(rows, bank, stride=2)  # (B, 2, n/2)
    return out.reshape(shape[:-1] + (n,))


def _synthesis_1d(c: Tensor, bank: Tensor) -> Tensor:
    """Adjoint (= inverse) of :func:`_analysis_1d` along the last axis."""
    shape = c.shape
    n, L = shape[-1], bank.shape[-1]
    coeffs = c.reshape(-1, 2, n // 2)
    full = F.conv_transpose1d(coeffs, bank, stride=2)  # (B, 1, n + L - 2)
    full = full[:, 0]
    out = full[..., :n].clone()
    tail = full[..., n:]
    while tail.shape[-1] > 0:  # fold the periodic extension back
        k = min(n, tail.shape[-1])
        out[..., :k] += tail[..., :k]
        tail = tail[..., k:]
    return torch.roll(out, 1 - L // 2, dims=-1).reshape(shape)


def _apply_2d(x: Tensor, bank: Tensor, levels: int, inverse: bool) -> Tensor:
    H, W = x.shape[-2], x.shape[-1]
    sizes = [(H >> j, W >> j) for j in range(levels)]
    out = x.clone()
    order = reversed(sizes) if inverse else sizes
    for h, w in order:
        block = out[..., :h, :w]
        if not inverse:
            block = _analysis_1d(block, bank)
            block = _analysis_1d(block.transpose(-1, -2), bank).transpose(-1, -2)
        else:
            block = _synthesis_1d(block.transpose(-1, -2), bank).transpose(-1, -2)
            block = _synthesis_1d(block, bank)
        out = out.clone() if out.requires_grad else out
        out[..., :h, :w] = block
    return out


def max_levels(shape: tuple[int, int], name: str) -> int:
    """Number of levels such that every level halves even sizes and stays above the filter."""
    L = len(wavelet_filters(name)[0])
    levels = 0
    h, w = shape
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= L and w // 2 >= L:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


def dwt2(x: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Multi-level orthogonal 2-D DWT of ``(..., H, W)``; sizes divisible by ``2**levels``."""
    xr, cplx = _as_real_rows(x)
    bank = _bank(name, xr.dtype, xr.device)
    out = _apply_2d(xr, bank, levels, inverse=False)
    return torch.view_as_complex(out.movedim(0, -1).contiguous()) if cplx else out


def idwt2(c: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2`."""
    cr, cplx = _as_real_rows(c)
    bank = _bank(name, cr.dtype, cr.device)
    out = _apply_2d(cr, bank, levels, inverse=True)
    return torch.view_as_complex(out.movedim(0, -1).contiguous()) if cplx else out
