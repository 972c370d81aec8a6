"""Orthogonal, periodised 2-D discrete wavelet transform in torch.

Filters come from PyWavelets (a SigPy dependency) so that every Daubechies/Symlet/Coiflet
name works. With periodic extension and even lengths at each level the transform is
an orthogonal matrix, so the adjoint is the inverse.

Coefficients are stored in one array of the input's (padded) shape: the approximation of the
coarsest level in the top-left corner, details around it (the usual "coefficient image").

Two evaluations of the same transform, equal to rounding (``tests/operators/test_operators_mri.py``):

* torch (autograd, GPU, any batch): polyphase form, one scaled add per filter tap on whole
  contiguous rows, the column step done as a row step between two transposes (4.5x less CPU
  time than the earlier conv1d formulation, 640 x 368 complex64, one thread);
* CPU tensors that need no gradient (classical reconstructions): each level is PyWavelets' C
  ``dwt2``/``idwt2`` on the tensor's memory, which measured slightly faster again at one
  thread (figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor


@functools.lru_cache(maxsize=32)
def wavelet_filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Decomposition (low, high) filters of an orthogonal wavelet, e.g. ``"db4"``."""
    import pywt

    w = pywt.Wavelet(name)
    if not w.orthogonal:
        raise ValueError(f"wavelet {name!r} is not orthogonal; use e.g. 'haar', 'db4', 'sym8'")
    return tuple(w.dec_lo[::-1]), tuple(w.dec_hi[::-1])


def _rows(x: Tensor, dim: int) -> tuple[Tensor, int]:
    """Real view of ``x`` and the index of axis ``dim`` in it (complex: one trailing axis of 2)."""
    if x.is_complex():
        return torch.view_as_real(x), dim - 1
    return x, dim


def _analysis(x: Tensor, lo: tuple[float, ...], hi: tuple[float, ...], dim: int) -> Tensor:
    """One periodic analysis step along ``dim`` (``-2``: rows): ``[lo | hi]`` halves, same shape.

    PyWavelets' "periodization": ``a[k] = sum_j lo[j] x[(2k + j - s) mod n]`` with
    ``s = L/2 - 1`` for the time-reversed decomposition filter ``lo`` of length ``L``. Polyphase
    form: one scaled add per tap of the stride-2 view of the periodically extended signal.
    Along the rows these are whole contiguous rows (vectorised, and differentiable).
    """
    n, L = x.shape[dim], len(lo)
    s = L // 2 - 1
    if n >= L:
        xp = torch.cat([x.narrow(dim, n - s, s), x, x.narrow(dim, 0, L - 1 - s)], dim=dim)
    else:  # the filter is longer than the signal (coarse levels): wrap around by index
        wrap = torch.arange(-s, n + L - 1 - s, device=x.device) % n
        xp = x.index_select(dim, wrap)
    idx = [slice(None)] * x.ndim
    a = d = None
    for j in range(L):
        idx[dim] = slice(j, j + n, 2)
        v = xp[tuple(idx)]
        if a is None:
            a, d = v * lo[0], v * hi[0]
        else:
            a.add_(v, alpha=lo[j])
            d.add_(v, alpha=hi[j])
    return torch.cat([a, d], dim=dim)


def _synthesis(c: Tensor, lo: tuple[float, ...], hi: tuple[float, ...], dim: int) -> Tensor:
    """Adjoint (= inverse) of :func:`_analysis` along ``dim``."""
    n, L = c.shape[dim], len(lo)
    s = L // 2 - 1
    a, d = c.narrow(dim, 0, n // 2), c.narrow(dim, n // 2, n // 2)
    shape = list(c.shape)
    shape[dim] = n + L - 1
    ext = c.new_zeros(shape)
    idx = [slice(None)] * c.ndim
    for j in range(L):
        idx[dim] = slice(j, j + n, 2)
        v = ext[tuple(idx)]
        v.add_(a, alpha=lo[j])
        v.add_(d, alpha=hi[j])
    # fold the periodic extension back: ext[m] belongs to sample (m - s) mod n
    if n < L:
        wrap = torch.arange(-s, n + L - 1 - s, device=c.device) % n
        return c.new_zeros(c.shape).index_add_(dim, wrap, ext)
    out = ext.narrow(dim, s, n).clone()
    out.narrow(dim, n - s, s).add_(ext.narrow(dim, 0, s))
    out.narrow(dim, 0, L - 1 - s).add_(ext.narrow(dim, s + n, L - 1 - s))
    return out


def _level(block: Tensor, lo, hi, inverse: bool) -> Tensor:
    """One 2-D level on ``(..., h, w)``: rows step, transpose, rows step, transpose back.

    Both 1-D steps run along the row axis (whole contiguous rows), which is several times faster
    than stepping along the last axis; two transposes cost less than that difference.
    """
    step = _synthesis if inverse else _analysis
    if inverse:
        xr, dim = _rows(block.contiguous(), -2)
        block = torch.view_as_complex(step(xr, lo, hi, dim)) if block.is_complex() else step(xr, lo, hi, dim)
    t = block.transpose(-1, -2).contiguous()
    tr, dim = _rows(t, -2)
    t = step(tr, lo, hi, dim)
    t = torch.view_as_complex(t) if block.is_complex() else t
    block = t.transpose(-1, -2).contiguous()
    if not inverse:
        xr, dim = _rows(block, -2)
        block = torch.view_as_complex(step(xr, lo, hi, dim)) if block.is_complex() else step(xr, lo, hi, dim)
    return block


def _apply_2d(x: Tensor, name: str, levels: int, inverse: bool) -> Tensor:
    lo, hi = wavelet_filters(name)
    H, W = x.shape[-2], x.shape[-1]
    sizes = [(H >> j, W >> j) for j in range(levels)]
    out = x.clone()
    for h, w in reversed(sizes) if inverse else sizes:
        block = _level(out[..., :h, :w], lo, hi, inverse)
        if out.requires_grad:
            out = out.clone()
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


_PYWT_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _use_pywt(x: Tensor) -> bool:
    """The C path serves CPU tensors outside autograd (no graph to record)."""
    return (x.device.type == "cpu" and x.dtype in _PYWT_DTYPES
            and not (torch.is_grad_enabled() and x.requires_grad))


def _planes(x: Tensor) -> np.ndarray:
    """``(N, H, W)`` NumPy view (or copy) of the leading-flattened tensor, same dtype."""
    return x.detach().resolve_conj().resolve_neg().reshape((-1, *x.shape[-2:])).numpy()


def _dwt2_pywt(x: Tensor, name: str, levels: int) -> Tensor:
    import pywt

    planes = _planes(x)
    o = np.empty(planes.shape, planes.dtype)
    # 2-D calls per plane on the native dtype (complex too): measured faster than one batched
    # call and than splitting real and imaginary parts by hand
    for src, dst in zip(planes, o):
        a = src
        for _ in range(levels):
            a, (da, ad, dd) = pywt.dwt2(a, name, mode="periodization")
            h, w = a.shape
            # top right: low-pass along H, high-pass along W ("ad"); bottom left "da"; bottom right "dd"
            dst[:h, w : 2 * w] = ad
            dst[h : 2 * h, :w] = da
            dst[h : 2 * h, w : 2 * w] = dd
        dst[:h, :w] = a
    return torch.from_numpy(o).reshape(x.shape)


def _idwt2_pywt(c: Tensor, name: str, levels: int) -> Tensor:
    import pywt

    planes = _planes(c)
    o = np.empty(planes.shape, planes.dtype)
    H, W = planes.shape[-2:]
    for src, dst in zip(planes, o):
        h, w = H >> levels, W >> levels
        a = src[:h, :w]
        for _ in range(levels):
            details = (src[h : 2 * h, :w], src[:h, w : 2 * w], src[h : 2 * h, w : 2 * w])
            a = pywt.idwt2((a, details), name, mode="periodization")
            h, w = 2 * h, 2 * w
        dst[...] = a
    return torch.from_numpy(o).reshape(c.shape)


def dwt2(x: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Multi-level orthogonal 2-D DWT of ``(..., H, W)``; sizes divisible by ``2**levels``."""
    if _use_pywt(x) and levels > 0:
        return _dwt2_pywt(x, name, levels)
    return _apply_2d(x, name, levels, inverse=False)


def idwt2(c: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2`."""
    if _use_pywt(c) and levels > 0:
        return _idwt2_pywt(c, name, levels)
    return _apply_2d(c, name, levels, inverse=True)
