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
  periodically extended rows, from per-thread plans (scratch buffers and views prepared once
  per shape). 640 x 368 complex64, db4, 4 levels: forward + adjoint 0.5-0.9x the time of
  PyWavelets' ``wavedec2`` + ``waverec2`` at 1 and 2 threads, where the former path
  (PyWavelets' C ``dwt2``/``idwt2`` per level plus packing) was 1.1-1.3x (figures in
  ``benchmarks/README.md``).
"""

from __future__ import annotations

import functools
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.caches import register as register_cache
from mrirecon.core.checks import require_floating
from mrirecon.core.parallel import serial_if_small

#: Largest deviation of a filter's even-shift autocorrelation from ``[1, 0, 0, ...]`` that a
#: wavelet may have: PyWavelets' orthogonal filter tables are orthonormal to 1.5e-11 (sym20,
#: the worst), its discrete Meyer ``dmey`` (flagged orthogonal; a truncated FIR filter) only
#: to 2.2e-3
ORTHONORMAL_TOLERANCE = 1e-8


@functools.lru_cache(maxsize=32)
def wavelet_filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Decomposition (low, high) filters of an orthogonal wavelet, e.g. ``"db4"``.

    The one check of a wavelet name (:class:`~mrirecon.operators.Wavelet`, ``l1_wavelet`` and
    its pipeline settings go through it): unknown and continuous names (PyWavelets' error),
    wavelets PyWavelets does not call orthogonal, and those it does whose low-pass filter is not
    orthonormal to its even shifts (``dmey``: ``sum lo^2 = 1.0022``, the transform then is no
    isometry, 0.5-3 % round-trip error, while ``Wavelet.gram`` and ``l1_wavelet``'s prox assume
    one) are refused with a ``ValueError``.
    """
    import pywt

    w = pywt.Wavelet(name)
    if not w.orthogonal:
        raise ValueError(f"wavelet {name!r} is not orthogonal; use e.g. 'haar', 'db4', 'sym8'")
    lo = np.asarray(w.dec_lo, dtype=np.float64)
    L = len(lo)
    # sum_n lo[n] lo[n + 2k] must be 1 for k = 0 and 0 otherwise (orthonormal to even shifts)
    gram = np.correlate(lo, lo, mode="full")[L - 1 :: 2]
    err = float(np.max(np.abs(gram - np.eye(1, len(gram))[0])))
    if err > ORTHONORMAL_TOLERANCE:
        raise ValueError(
            f"wavelet {name!r} is not orthogonal to float64 precision: PyWavelets flags it "
            f"orthogonal, but its {L}-tap filter is orthonormal only to {err:.2g} (sum lo^2 = "
            f"{float(lo @ lo):.6g}, not 1), so the transform would not be the isometry the "
            "wavelet operator and l1_wavelet assume; use e.g. 'haar', 'db4', 'sym8'")
    return tuple(w.dec_lo[::-1]), tuple(w.dec_hi[::-1])


def _rows(x: Tensor, dim: int) -> tuple[Tensor, int]:
    """Real view of ``x`` and the index of axis ``dim`` in it (complex: one trailing axis of 2)."""
    if x.is_complex():  # a lazy conjugate (y.conj()) is resolved: view_as_real refuses it
        return torch.view_as_real(x.resolve_conj()), dim - 1
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
    """The most levels such that every level halves even sizes and its bands keep at least
    the filter's length in both axes."""
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


def _check_sizes(x: Tensor, levels: int, who: str) -> None:
    """Refuse sizes the periodised transform cannot halve ``levels`` times (it failed inside a
    reshape: "shape '[1, 62, 97]' is invalid for input of size 6111")."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise ValueError(f"{who}: levels must be an integer >= 0, got {levels!r}")
    if x.ndim < 2:
        raise ValueError(f"{who}: needs an array (..., H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % (1 << levels) or w % (1 << levels):
        raise ValueError(f"{who}: {levels} levels need H and W divisible by {1 << levels}, got "
                         f"{h} x {w}; pad the image (operators.Wavelet pads and crops for you)")


def dwt2(x: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Multi-level orthogonal 2-D DWT of ``(..., H, W)``; sizes divisible by ``2**levels``."""
    require_floating(x, "dwt2 (operators.Wavelet)")
    _check_sizes(x, levels, "dwt2")
    if _use_fast(x) and levels > 0:
        with serial_if_small(x):
            return _apply_fast(x, name, levels, inverse=False)
    return _apply_2d(x, name, levels, inverse=False)


def idwt2(c: Tensor, name: str = "db4", levels: int = 3) -> Tensor:
    """Inverse (= adjoint) of :func:`dwt2`."""
    require_floating(c, "idwt2 (operators.Wavelet)")
    _check_sizes(c, levels, "idwt2")
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


register_cache(_band.cache_clear)


def _real_rows(x: Tensor) -> Tensor:
    """``(n, w)`` tensor (rows may be strided) as real rows ``(n, w)`` or ``(n, 2w)``."""
    return torch.view_as_real(x.resolve_conj()).flatten(-2) if x.is_complex() else x


class _Step:
    """One 1-D step along dim 0 of an ``(n, w)`` input, bound to a plan's scratch buffers.

    Everything but the input is prepared once: the extension gather's target, the strided GEMM
    windows over it and the output views. A call is the gather (``index_select``, which also
    makes a transposed input contiguous) and one GEMM (analysis: both filters at once, rows
    come out block-interleaved) or two (synthesis). ``res`` writes into another ``(n, w)``
    tensor than the plan's scratch output (the finest synthesis level writes the image).
    """

    def __init__(self, name: str, n: int, w: int, inverse: bool, ext: Tensor, out: Tensor) -> None:
        real_dtype = ext.real.dtype if ext.is_complex() else ext.dtype
        P, nb, A, ext_a, Ka, S, ext_s, Ks = _band(name, n, real_dtype, ext.device)
        self.idx = ext_s if inverse else ext_a
        self.e = ext[: self.idx.numel() * w].view(self.idx.numel(), w)
        ep = _real_rows(self.e)
        M = ep.shape[-1]
        self.blocks = (nb, 2 * P, M)
        if inverse:
            half_ext = self.idx.numel() // 2
            wa = ep.as_strided((nb, Ks, M), (P * M, M, 1))
            wd = ep.as_strided((nb, Ks, M), (P * M, M, 1), storage_offset=ep.storage_offset() + half_ext * M)
            self.first, self.second = (S[0], wa), (S[1].expand(nb, 2 * P, Ks), wd)
        else:
            self.first, self.second = (A, ep.as_strided((nb, Ka, M), (2 * P * M, M, 1))), None
        self.res = out[: n * w].view(n, w)
        self.target = _real_rows(self.res).view(self.blocks)

    def __call__(self, x: Tensor, res: Tensor | None = None) -> Tensor:
        torch.index_select(x, 0, self.idx, out=self.e)
        target = self.target if res is None else _real_rows(res).view(self.blocks)
        torch.matmul(*self.first, out=target)
        if self.second is not None:
            target.baddbmm_(*self.second)
        return self.res if res is None else res


class _Plan:
    """Every step of a multi-level 2-D transform of ``(H, W)`` planes, prepared once per
    thread (:func:`_plan`). The scratch buffers are the plan's own and kept between calls:
    fresh multi-MiB buffers per call cost page faults on first touch (glibc returns them to
    the OS on free), about a third of the transform; preparing the views once removes most of
    the per-call Python and dispatch work (22 instead of ~60 torch calls per transform)."""

    def __init__(self, name: str, H: int, W: int, levels: int, dtype: torch.dtype,
                 device: torch.device, inverse: bool) -> None:
        sizes = [(H >> j, W >> j) for j in range(levels)]
        L = len(wavelet_filters(name)[0])
        ext_len = max((n + L + 2) * m for h, w in sizes for n, m in ((h, w), (w, h)))
        with torch.inference_mode(False):  # normal tensors: usable inside and outside
            ext = torch.empty(ext_len, dtype=dtype, device=device)
            tmp = torch.empty(H * W, dtype=dtype, device=device)
            self.levels = []
            for h, w in sizes:
                if inverse:  # columns (input: the level's block transposed), then rows
                    cols, rows = _Step(name, w, h, True, ext, tmp), _Step(name, h, w, True, ext, tmp)
                    self.levels.append((h, w, cols, rows, cols.res.t()))
                else:  # rows, then columns on the transpose; the coefficient copy undoes
                    # the block interleaving of both axes and the transpose at once
                    real_dtype = ext.real.dtype if ext.is_complex() else ext.dtype
                    rows, cols = _Step(name, h, w, False, ext, tmp), _Step(name, w, h, False, ext, tmp)
                    (ph, nh), (pw, nw) = (_band(name, h, real_dtype, device)[:2],
                                          _band(name, w, real_dtype, device)[:2])
                    coeffs = cols.res.view(nw, 2, pw, nh, 2, ph).permute(4, 3, 5, 1, 0, 2)
                    self.levels.append((h, w, rows, cols, rows.res.t(), coeffs, (2, nh, ph, 2, nw, pw)))

    def analysis(self, planes_in: Tensor, planes_out: Tensor) -> None:
        for plane_in, plane in zip(planes_in, planes_out):
            for k, (h, w, rows, cols, cols_in, coeffs, blocks) in enumerate(self.levels):
                rows((plane_in if k == 0 else plane)[:h, :w])
                cols(cols_in)
                plane[:h, :w].view(blocks).copy_(coeffs)

    def synthesis(self, planes: Tensor) -> None:
        """In place: coefficient images -> images."""
        for plane in planes:
            for k in reversed(range(len(self.levels))):
                h, w, cols, rows, rows_in = self.levels[k]
                view = plane[:h, :w]
                cols(view.t())
                if k == 0:  # the finest level writes the image in place of its coefficients
                    rows(rows_in, res=plane)
                else:
                    view.copy_(rows(rows_in))


class _Plans(dict):
    """One thread's plans, keyed by (name, H, W, levels, dtype, device, inverse): a dict that a
    weak set can hold, equal to itself only (two threads' empty dicts are two entries)."""

    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__


_SCRATCH = threading.local()
_MAX_PLANS = 16  # per thread; more distinct shapes rebuild (cheap next to a transform)
# every live thread's plans, so that clear_caches reaches them all (a thread's go with it)
_ALL_PLANS: weakref.WeakSet[_Plans] = weakref.WeakSet()
_ALL_PLANS_LOCK = threading.Lock()


def plan_dicts() -> list[_Plans]:
    """The plan dicts of the live threads that have transformed (one each)."""
    with _ALL_PLANS_LOCK:
        return list(_ALL_PLANS)


def _clear_plans() -> None:
    """Drop every thread's plans (:func:`mrirecon.clear_caches`). A transform running in
    another thread keeps the plan it holds; that thread's next call builds a new one."""
    for plans in plan_dicts():
        plans.clear()


register_cache(_clear_plans)


def _plan(name: str, H: int, W: int, levels: int, dtype: torch.dtype, device: torch.device,
          inverse: bool) -> _Plan:
    plans = getattr(_SCRATCH, "plans", None)
    if plans is None:
        plans = _SCRATCH.plans = _Plans()
        with _ALL_PLANS_LOCK:
            _ALL_PLANS.add(plans)
    key = (name, H, W, levels, dtype, device, inverse)
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plan = plans[key] = _Plan(name, H, W, levels, dtype, device, inverse)
    return plan


def _apply_fast(x: Tensor, name: str, levels: int, inverse: bool) -> Tensor:
    """Every level of every ``(H, W)`` plane into a new coefficient image (or image).

    A 2-D level is rows then columns (analysis) or columns then rows (synthesis); the columns
    step runs on the transpose, whose copy is the extension gather itself. The first analysis
    level reads ``x`` itself and the last synthesis level writes the result directly, so only
    the synthesis copies its input once.
    """
    H, W = x.shape[-2], x.shape[-1]
    plan = _plan(name, H, W, levels, x.dtype, x.device, inverse)
    src = x.detach().resolve_conj().resolve_neg().reshape(-1, H, W)
    if inverse:
        # row-major planes: the steps read and write a complex plane through real views of
        # its rows, which a column-major copy (a transposed or Fortran-ordered input, which
        # clone() would keep) cannot give, so the last step wrote into a temporary (error 1.4)
        out = src.clone(memory_format=torch.contiguous_format)
        plan.synthesis(out)
        return out.reshape(x.shape)
    out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
    plan.analysis(src, out)
    return out.reshape(x.shape)
