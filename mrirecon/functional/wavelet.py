"""Orthogonal, periodised 2-D discrete wavelet transform in torch.

Filters come from PyWavelets (a SigPy dependency) so that every Daubechies/Symlet/Coiflet
name works. With periodic extension and even lengths at each level the transform is
an orthogonal matrix, so the adjoint is the inverse.

Coefficients are stored in one array of the input's (padded) shape: the approximation of the
coarsest level in the top-left corner, details around it (the usual "coefficient image").

Two evaluations of the same transform, equal to rounding (``tests/operators/test_operators_mri.py``):

* autograd and GPU: polyphase form, one scaled add per filter tap on whole contiguous rows,
  the column step done as a row step between two transposes;
* CPU tensors that need no gradient (classical reconstructions): each 1-D step is one batched
  GEMM of a small block of the banded transform matrix against strided windows of the
  periodically extended rows, with per-thread scratch buffers. 640 x 368
  complex64, db4, 4 levels: forward + adjoint 0.7x the CPU time of PyWavelets' ``wavedec2`` +
  ``waverec2`` at 1 and 2 threads, where the former path (PyWavelets' C ``dwt2``/``idwt2``
  per level plus packing) was 1.1-1.3x (figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.parallel import serial_if_small


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


_FAST_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _use_fast(x: Tensor) -> bool:
    """The GEMM path serves CPU tensors outside autograd (no graph to record). It uses only
    generic torch operations, but it has not been measured or tested on a GPU, so CUDA tensors
    keep the polyphase path."""
    return (x.device.type == "cpu" and x.dtype in _FAST_DTYPES
            and not (torch.is_grad_enabled() and x.requires_grad))


def dwt2(x: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Multi-level orthogonal 2-D DWT of ``(..., H, W)``; sizes divisible by ``2**levels``."""
    if _use_fast(x) and levels > 0:
        with serial_if_small(x):
            return _apply_fast(x, name, levels, inverse=False)
    return _apply_2d(x, name, levels, inverse=False)


def idwt2(c: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2`."""
    if _use_fast(c) and levels > 0:
        with serial_if_small(c):
            return _apply_fast(c, name, levels, inverse=True)
    return _apply_2d(c, name, levels, inverse=True)


# ---- no-grad path: banded block matrices, one batched matmul per 1-D step -------------------
#
# A periodised 1-D analysis step of length n is a banded n x n matrix. Cut the output into
# blocks of P low-pass and P high-pass samples: every block reads the same number of
# consecutive samples of the periodically extended input (2P + L - 2), so one small matrix
# per filter, applied to strided windows of the extended rows, gives the whole step as one
# batched GEMM over whole contiguous rows. The synthesis step (the transpose) is the same in
# gather form: a block of 2P outputs reads K consecutive low-pass and high-pass coefficients.


def _block_size(half: int) -> int:
    """Outputs per filter and block: small blocks keep the band's zeros few, but ``P`` must
    divide ``half``; short signals (coarse levels) take one dense block."""
    if half <= 32:
        return half
    for p in (4, 8, 2, 6, 3, 5, 7):
        if half % p == 0:
            return p
    return 1


@functools.lru_cache(maxsize=128)
def _band(name: str, n: int, dtype: torch.dtype, device: torch.device):
    """Block matrices and extension indices of the 1-D step of length ``n`` (even)."""
    lo, hi = wavelet_filters(name)
    L, half = len(lo), n // 2
    s = L // 2 - 1
    P = _block_size(half)
    nb = half // P
    # analysis: a[k] = sum_j lo[j] x[(2k + j - s) mod n]; block b reads xp[2Pb : 2Pb + 2P + L - 2]
    Ka = 2 * P + L - 2
    A = np.zeros((2, P, Ka))
    for i in range(P):
        A[0, i, 2 * i : 2 * i + L] = lo
        A[1, i, 2 * i : 2 * i + L] = hi
    A = A.reshape(2 * P, Ka)
    ext_a = (np.arange(n + L - 2) - s) % n
    # synthesis: x[m] = sum over integers k with j = m + s - 2k in [0, L) of lo[j] a[k mod n/2]
    # (+ hi[j] d[...]); block b (m in [2Pb, 2Pb + 2P)) reads k in [Pb - q, Pb - q + Ks)
    q = (L - 1 - s) // 2
    Ks = (2 * P - 1 + s) // 2 + q + 1
    S = np.zeros((2, 2 * P, Ks))
    for r in range(2 * P):
        for t in range(Ks):
            j = r + s - 2 * (t - q)
            if 0 <= j < L:
                S[0, r, t], S[1, r, t] = lo[j], hi[j]
    ext_s = (np.arange(half - P + Ks) - q) % half
    ext_s = np.concatenate([ext_s, ext_s + half])
    def t(a, dt=dtype):
        with torch.inference_mode(False):  # cached: must not be an inference tensor
            return torch.as_tensor(a, dtype=dt, device=device)

    return P, nb, t(A), t(ext_a, torch.long), Ka, t(S), t(ext_s, torch.long), Ks


def _real_rows(x: Tensor) -> Tensor:
    """``(n, w)`` tensor (rows may be strided) as real rows ``(n, w)`` or ``(n, 2w)``."""
    return torch.view_as_real(x).flatten(-2) if x.is_complex() else x


def _step_rows(x: Tensor, name: str, inverse: bool, ext: Tensor, out: Tensor) -> Tensor:
    """One 1-D step along dim 0 of a 2-D ``(n, w)`` tensor ``x`` (any strides) into ``out``.

    ``ext`` and ``out`` are flat scratch buffers of ``x``'s dtype (reused across steps and
    levels: fresh large buffers cost page faults on first touch, as much as the GEMMs). The
    extension gather (``index_select``) also makes the rows contiguous, so a transposed view as
    input is transposed and extended in the same copy. Returns ``out`` viewed as ``(n, w)``.
    """
    n, w = x.shape
    real_dtype = x.real.dtype if x.is_complex() else x.dtype
    P, nb, A, ext_a, Ka, S, ext_s, Ks = _band(name, n, real_dtype, x.device)
    idx = ext_s if inverse else ext_a
    e = torch.index_select(x, 0, idx, out=ext[: idx.numel() * w].view(idx.numel(), w))
    res = out[: n * w].view(n, w)
    o, ep = _real_rows(res), _real_rows(e)
    M = o.shape[-1]
    if not inverse:
        # one GEMM for both filters: rows come out block-interleaved, (block, lo/hi, P)
        win = ep.as_strided((nb, Ka, M), (2 * P * M, M, 1))
        torch.matmul(A, win, out=o.view(nb, 2 * P, M))
    else:
        half_ext = idx.numel() // 2
        wa = ep.as_strided((nb, Ks, M), (P * M, M, 1))
        wd = ep.as_strided((nb, Ks, M), (P * M, M, 1), storage_offset=ep.storage_offset() + half_ext * M)
        ov = o.view(nb, 2 * P, M)
        torch.matmul(S[0], wa, out=ov)
        ov.baddbmm_(S[1].expand(nb, 2 * P, Ks), wd)
    return res


_SCRATCH = threading.local()


def _scratch(slot: str, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Per-thread scratch buffer kept between calls on the CPU: a fresh multi-MiB buffer per
    call costs page faults on first touch (glibc returns it to the OS on free), which measured
    about a third of the whole transform; CUDA's caching allocator needs no help."""
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    cache = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = cache.get((slot, dtype))
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside
            buf = cache[(slot, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def _apply_fast(x: Tensor, name: str, levels: int, inverse: bool) -> Tensor:
    """Every level of every ``(H, W)`` plane into a new coefficient image (or image).

    A 2-D level is rows then columns (analysis) or columns then rows (synthesis); the columns
    step runs on the transpose, whose copy is the extension gather itself. Analysis writes
    both filters' outputs with one GEMM, block-interleaved along each axis; the copy of a
    level into the coefficient image undoes the interleaving and the transpose at once. The
    first analysis level reads ``x`` itself and the last synthesis level writes the result
    directly, so only the synthesis copies its input once.
    """
    H, W = x.shape[-2], x.shape[-1]
    sizes = [(H >> j, W >> j) for j in range(levels)]
    L = len(wavelet_filters(name)[0])
    ext_len = max((n + L + 2) * m for h, w in sizes for n, m in ((h, w), (w, h)))
    ext = _scratch("ext", ext_len, x.dtype, x.device)
    tmp = _scratch("tmp", H * W, x.dtype, x.device)
    src = x.detach().resolve_conj().resolve_neg().reshape(-1, H, W)
    rd = x.real.dtype if x.is_complex() else x.dtype
    if inverse:
        out = src.clone()
        for plane in out:
            for h, w in reversed(sizes):
                view = plane[:h, :w]
                t = _step_rows(view.t(), name, True, ext, tmp)
                if h == H:  # the finest level writes the image in place of its coefficients
                    _step_rows(t.t(), name, True, ext, plane.view(-1))
                else:
                    view.copy_(_step_rows(t.t(), name, True, ext, tmp))
        return out.reshape(x.shape)
    out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
    for plane_in, plane in zip(src, out):
        for h, w in sizes:
            t = _step_rows((plane_in if h == H else plane)[:h, :w], name, False, ext, tmp)
            r = _step_rows(t.t(), name, False, ext, tmp)  # (w, h), both axes block-interleaved
            (ph, nh), (pw, nw) = _band(name, h, rd, x.device)[:2], _band(name, w, rd, x.device)[:2]
            plane[:h, :w].view(2, nh, ph, 2, nw, pw).copy_(
                r.view(nw, 2, pw, nh, 2, ph).permute(4, 3, 5, 1, 0, 2))
    return out.reshape(x.shape)
