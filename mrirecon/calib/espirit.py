"""ESPIRiT coil-sensitivity calibration (Uecker et al., MRM 71:990-1001, 2014).

Pipeline (same mathematics as SigPy's ``sigpy.mri.app.EspiritCalib``, one set of maps):

1. the centred ``calib_width`` square of k-space -> block-Hankel calibration matrix
   ``(blocks, coils * k * k)`` with ``k = kernel_width``;
2. SVD; the right singular vectors whose singular value exceeds ``thresh * s_max`` are the
   k-space kernels ``(K, coils, k, k)`` (from the eigendecomposition of the smaller of the two
   Gram matrices ``mat^H mat`` and ``mat mat^H``, so the cost is bounded by the smaller side);
3. per pixel ``q`` the image-space operator ``G(q) = N / k^2 * sum_j g_j(q) g_j(q)^H``, where
   ``g_j`` is the centred orthonormal inverse FFT of the zero-padded kernel ``j``;
4. its dominant eigenvector (power method, ``max_iter`` steps) is the map; the eigenvalue
   (about 1 where the coils see signal) crops the maps at ``crop``; the phase is referenced to
   coil 0, or to the strongest coil where coil 0 is dead or records noise only
   (:data:`REFERENCE_MIN_SHARE`).

Memory stays bounded. ``G(q)`` is never built from ``K`` full-size image kernels: since each
``g_j`` is band-limited to ``k`` samples, ``sum_j g_j g_j^H`` is a trigonometric polynomial of
degree ``k - 1`` whose ``(2k-1)^2`` coefficients are the summed kernel cross-correlations
``r_cd``. ``G`` is evaluated from them for a chunk of rows at a time (about ``chunk_size``
pixels, ``chunk_size * coils^2`` complex numbers), and the power method for that chunk runs by
repeated squaring of the ``(coils, coils)`` matrices (:func:`._linalg.power_iteration`), so
peak extra memory is ``O(chunk_size * coils^2 + coils^2 * k * W)`` whatever the image size.

Coarse-to-fine (``coarse > 1``, the default): ``G`` is a trigonometric polynomial of low degree,
so its dominant eigenvector varies smoothly wherever the eigengap is large. The full
``max_iter`` power steps run only on a grid ``coarse`` times coarser per axis (``G`` is
evaluated at the grid's exact, non-integer pixel positions); the vectors, phase-aligned to the
strongest coil, are interpolated bilinearly and start :data:`FINE_STEPS` power steps at every
pixel. A pixel whose eigen-residual ``||G v - lam v|| / lam`` is then above
``64 eps(dtype)`` (slow convergence: a small eigengap) is recomputed from scratch with the
full ``max_iter`` steps, so the result is the converged eigenvector either way. On fastMRI-size
slices (8 / 15 coils) the maps equal the ``coarse=1`` maps to 2e-7 (float32 rounding), the
crop mask is identical and the time is 0.6x / 0.4x. ``coarse=1`` reproduces SigPy's
``max_iter`` steps from a vector of ones exactly.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor

from mrirecon.calib._linalg import power_iteration
from mrirecon.core.checks import finite_and_nonzero, nonfinite_count
from mrirecon.core.magnitude import sum_abs2
from mrirecon.core.parallel import map_tasks

#: Power steps per pixel from the interpolated coarse-grid eigenvector (``coarse > 1``).
FINE_STEPS = 4

#: Least share of the strongest coil's calibration-block energy that coil 0 must hold to be the
#: phase reference (SigPy's convention, kept); below it the strongest coil is. A dead coil 0
#: (all zero) zeroed every map (``sgn(0) = 0``), and a noise-only one gave every map a random
#: phase (L1-wavelet 21.2 against 23.2 dB referenced to a live coil). On simulated birdcage
#: brains (4-16 coils, SNR 5-30 dB, 96 x 80 to 320 x 320, ring radius 1.2-2.0, axial offset
#: 0.5, coil gains 0.7 / 1.3) the weakest real coil holds 0.21 or more. A coil of noise only at
#: the data's noise level holds 6e-6 (30 dB, 320 x 320) to 1.6e-4 (30 dB, 64 x 56: the noise
#: share grows as the block's part of k-space), 1.5e-3 (15 dB, 128 x 112) and 1.5e-2 (5 dB,
#: where every coil is noisy). 1 % lies 13 dB below the former and 8-32 dB above the latter
#: from 15 dB up; ordinary data keep coil 0 bit for bit.
REFERENCE_MIN_SHARE = 0.01


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"espirit_maps: {name} must be an int or a pair of ints, got {v}")
    return (int(v[0]), int(v[1]))


def calibration_region(kspace: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centred ``shape`` block of k-space ``(..., H, W)`` around the DC sample.

    The block starts at ``N // 2 - n // 2`` on each axis, so DC (index ``N // 2`` for
    :func:`mrirecon.functional.fft2c`) sits at index ``n // 2`` of the block (SigPy's ``resize``).
    """
    H, W = kspace.shape[-2:]
    h, w = shape
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(
            f"calibration_region: calibration size {(h, w)} does not fit k-space {(H, W)}"
        )
    top, left = H // 2 - h // 2, W // 2 - w // 2
    return kspace[..., top : top + h, left : left + w]


#: The calibration matrix's kernels come from its rows x rows Gram matrix (in double
#: precision) when it has more than this many times as many columns as rows, else from the
#: cols x cols one (in its own precision). One thread, 24 x 24 block, kernel 6 (361 rows):
#: 11 coils (396 columns) 22 ms by columns against 48 ms by rows, 16 coils 58 / 56 ms, 32 coils
#: 383 / 86 ms; kernel 16 with 16 coils (81 x 4096) 18.7 s / 16 ms.
WIDE_GRAM_RATIO = 2


def espirit_kernels(calib: Tensor, kernel_width: int | tuple[int, int], thresh: float) -> Tensor:
    """Signal-subspace k-space kernels of a calibration block.

    Parameters
    ----------
    calib
        Fully sampled calibration k-space, shape ``(coils, h, w)``, complex.
    kernel_width
        Kernel size ``k`` (int or ``(kh, kw)``), smaller than the calibration block.
    thresh
        Keep right singular vectors with singular value ``> thresh * max`` (SigPy's ``thresh``).
        BART's ``ecalib -t T`` compares the eigenvalues of ``A^H A`` (squared singular values)
        with ``T``: it is ``thresh = sqrt(T)`` (its default 0.001 is 0.0316; 0.02 is ``-t 4e-4``).

    Returns
    -------
    Tensor
        Kernels ``(K, coils, kh, kw)``, each row of unit Frobenius norm.
    """
    kh, kw = _pair(kernel_width, "kernel_width")
    c, h, w = calib.shape
    if not (0 < kh <= h and 0 < kw <= w):
        raise ValueError(
            f"espirit_kernels: kernel {(kh, kw)} does not fit calibration block {(h, w)}"
        )
    blocks = calib.unfold(1, kh, 1).unfold(2, kw, 1)  # (c, nb1, nb2, kh, kw), a view
    mat = blocks.permute(1, 2, 0, 3, 4).reshape(-1, c * kh * kw)
    # the right singular vectors are the eigenvectors of the Gram matrix mat^H mat, with the
    # squared singular values as eigenvalues (BART's ecalib takes this route): about half the
    # time of the SVD of the tall matrix (24 vs 43 ms for 361 x 288 complex64, one thread).
    # Only the span of the kept vectors enters the maps (_kernel_correlations sums K K^H), so
    # their order and phases do not matter.
    # Both routes decompose in double precision. In complex64 the kept subspace was accurate
    # only to about eps / thresh^2 (the smallest kept eigenvalue is thresh^2 of the largest):
    # the eigenvalues of the maps moved by up to 7e-5 relative from the complex128 ones, and by
    # up to 1.8e-5 between 1 and 2 CPU threads (LAPACK's blocking), enough to reorder the pixels
    # the crop safeguard (centre.safe_crop) cuts (a 96 x 80 slice's TV image moved by 0.6 %).
    # From complex128 they are bit-identical at 1 and 2 threads; 288 x 288 costs ~1 ms more.
    wide = mat.to(torch.complex128 if mat.is_complex() else torch.float64)
    if mat.shape[1] <= WIDE_GRAM_RATIO * mat.shape[0]:
        e, v = torch.linalg.eigh(wide.mH @ wide)
        keep = e > (thresh * thresh) * e.max()
        return v[:, keep].to(mat.dtype).mH.reshape(-1, c, kh, kw)
    # A wide matrix (a kernel near the block width; the default block and kernel from 21 coils
    # up) has rank <= rows: decompose the small rows x rows Gram mat mat^H, whose nonzero
    # eigenvalues are the same, and recover v = mat^H u / s. The cols x cols route cost
    # O((coils k^2)^3): 1.9 s vs 6 ms for 81 x 2048, 0.38 s vs 45 ms for 361 x 1152. v lies in
    # the row space of mat whatever the rounding; it is normalised by its own norm (s up to
    # rounding), so a kept eigenvalue near rounding level (thresh ~ 0) still gives a unit kernel.
    # In double precision: the v of small kept eigenvalues (thresh 0.001, i.e. BART's -t 1e-6,
    # keeps down to 1e-6 of the largest; BART's default -t 0.001 is thresh 0.0316) come out of
    # complex64 far from orthogonal (max |K K^H - I| 0.24, the crop mask 165 pixels off SigPy's
    # where the cols x cols route was 12); the Gram of a 361 x 1152 block costs a few ms more so.
    e, u = torch.linalg.eigh(wide @ wide.mH)
    keep = e > (thresh * thresh) * e.max()
    v = wide.mH @ u[:, keep]
    norm = torch.linalg.vector_norm(v, dim=0)
    v = v / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    return v.to(mat.dtype).mH.reshape(-1, c, kh, kw)


def _kernel_correlations(kernels: Tensor) -> Tensor:
    """``r[c, d, u, v] = sum_j sum_p K_jc(p + D) conj(K_jd(p))`` for lags ``D = (u, v) - (k - 1)``.

    Shape ``(coils, coils, 2 kh - 1, 2 kw - 1)``; computed with FFTs padded to ``2k`` (no wrap).
    """
    _, c, kh, kw = kernels.shape
    f = torch.fft.fft2(kernels, s=(2 * kh, 2 * kw))  # (K, c, 2kh, 2kw)
    flat = f.reshape(f.shape[0], c, -1)
    cross = torch.einsum("jcf,jdf->cdf", flat, flat.conj()).reshape(c, c, 2 * kh, 2 * kw)
    r = torch.fft.ifft2(cross)
    # lags -(k-1)..(k-1) sit at indices [2k-(k-1), 2k) then [0, k)
    r = torch.roll(r, shifts=(kh - 1, kw - 1), dims=(-2, -1))
    return r[..., : 2 * kh - 1, : 2 * kw - 1]


def _lag_phases(n: int, k: int, rows: Tensor, dtype: torch.dtype) -> Tensor:
    """``exp(2 pi i D (q - n//2) / n)`` for pixels ``rows`` and lags ``D = -(k-1)..(k-1)``."""
    real = torch.float64
    lags = torch.arange(-(k - 1), k, device=rows.device, dtype=real)
    q = rows.to(real) - (n // 2)
    ang = (2 * math.pi / n) * q[:, None] * lags[None, :]
    return torch.polar(torch.ones_like(ang), ang).to(dtype)


def _column_factor(r: Tensor, W: int, cols: Tensor, dtype: torch.dtype) -> Tensor:
    """``t[u, (x, c, d)] = sum_v r[c, d, u, v] exp(2 pi i v' (x - W//2) / W)`` for the columns
    ``cols`` (any real positions): ``G`` at rows ``y`` is ``_lag_phases(H, kh, y) @ t``."""
    kh, kw = (r.shape[2] + 1) // 2, (r.shape[3] + 1) // 2
    return torch.einsum("cduv,xv->uxcd", r, _lag_phases(W, kw, cols, dtype)).reshape(2 * kh - 1, -1)


def _gram_rows(t: Tensor, H: int, rows: Tensor, c: int, dtype: torch.dtype) -> Tensor:
    """``G`` ``(len(rows) * columns, c, c)`` at ``rows`` from :func:`_column_factor`'s ``t``."""
    return (_lag_phases(H, t.shape[0] // 2 + 1, rows, dtype) @ t).reshape(-1, c, c)


def espirit_maps(
    kspace: Tensor,
    calib_width: int | tuple[int, int] = 24,
    kernel_width: int | tuple[int, int] = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 100,
    *,
    chunk_size: int = 4096,
    coarse: int = 4,
    return_eigenvalues: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """ESPIRiT sensitivity maps (one set) from k-space with a fully sampled centre.

    Parameters
    ----------
    kspace
        Centred k-space ``(..., coils, H, W)`` (DC at ``(H // 2, W // 2)``, as produced by
        :func:`mrirecon.functional.fft2c`), complex64 or complex128; only the central
        ``calib_width`` block is used. Leading axes are independent slices.
    calib_width
        Largest side of the calibration block (int or ``(h, w)``), in samples; a side beyond
        the matrix is the matrix's (as BART's ``ecalib -r``). Where k-space is
        fully sampled over a smaller centred block (a fastMRI 8x mask of 320 columns acquires
        13 centre columns), that block is used with a warning, as BART's ``ecalib`` does for an
        even band (an odd band of an even axis, such as those 13 columns, BART calibrates on one
        column fewer: it places the region at ``(N - n) / 2``, off DC; pass ``calib_width=(h,
        n - 1)`` to match it); refused when ``kernel_width`` takes fewer than 3 positions along
        a side of it (wider than the side - 2, :func:`largest_kernel`: the maps came out zero).
    kernel_width
        Side of the k-space kernels (int or ``(kh, kw)``), in samples.
    thresh
        Relative singular-value threshold defining the signal subspace (SigPy's ``thresh``;
        BART's ``ecalib -t T`` is ``thresh = sqrt(T)``: BART thresholds squared singular values,
        so its default ``-t 0.001`` is 0.0316 here and this default 0.02 is ``-t 0.0004``;
        checked against BART 0.8 in ``tests/calib/test_bart_parity.py``).
    crop
        Maps are zeroed where the dominant eigenvalue is ``<= crop`` (0 keeps everything); BART's
        ``ecalib -c`` one to one (the same eigenvalue scale).
    max_iter
        Power-method steps. With ``coarse=1`` the result equals that many plain power
        iterations from a vector of ones, as in SigPy (computed by repeated squaring); with
        ``coarse > 1`` they run on the coarse grid and wherever the warm start converges slowly.
    chunk_size
        Approximate number of pixels processed at once (bounds the extra memory to about
        ``4 * chunk_size * coils^2`` complex numbers).
    coarse
        Stride of the coarse grid that warm-starts the power method (module docstring);
        ``1`` runs ``max_iter`` steps at every pixel, as SigPy. Images with fewer than
        ``8 * coarse`` pixels per axis are not coarsened.
    return_eigenvalues
        Also return the eigenvalue map ``(..., H, W)`` (real).

    Returns
    -------
    maps : Tensor
        Sensitivities ``(..., coils, H, W)``, unit norm over coils where not cropped, phase
        relative to coil 0 (to the coil with the most calibration energy where coil 0 holds
        less than :data:`REFERENCE_MIN_SHARE` of its energy: dead or noise only).
    eigenvalues : Tensor, optional
        Dominant eigenvalue per pixel, ``(..., H, W)``.
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.ndim < 3:
        got = tuple(kspace.shape) if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(
            f"espirit_maps: kspace must be a complex tensor (..., coils, H, W), got {got}"
        )
    if max_iter < 1 or chunk_size < 1 or coarse < 1:
        raise ValueError(
            "espirit_maps: max_iter, chunk_size and coarse must be >= 1, got "
            f"{max_iter}, {chunk_size}, {coarse}"
        )
    # thresh >= 1 (or NaN) keeps no kernel: it failed inside an FFT of no kernels ("MKL FFT
    # error: Inconsistent configuration parameters"); a crop >= 1 (or NaN) zeroes every pixel
    # (the eigenvalue is about 1 where the coils see signal): all-zero maps came back
    if not (isinstance(thresh, numbers.Real) and 0 <= thresh < 1):
        raise ValueError("espirit_maps: thresh must be a number in [0, 1) (a fraction of the "
                         f"largest singular value), got {thresh!r}")
    if not (isinstance(crop, numbers.Real) and crop < 1):  # NaN fails too
        raise ValueError("espirit_maps: crop must be a number below 1 (the eigenvalue at or "
                         "below which maps are zeroed: it is about 1 where the coils see signal, "
                         f"so {crop!r} would zero every map; 0 keeps all), got {crop!r}")
    lead = kspace.shape[:-3]
    flat = kspace.reshape((-1,) + tuple(kspace.shape[-3:]))
    asked, kernel = _pair(calib_width, "calib_width"), _pair(kernel_width, "kernel_width")
    # a matrix smaller than calib_width calibrates on all of it, as BART's ecalib -r and the
    # non-Cartesian maps (gridded_calib_width) do: the default 24 on a 16 x 16 phantom failed,
    # "calibration_region: calibration size (24, 24) does not fit k-space (16, 16)"
    asked = (min(asked[0], int(kspace.shape[-2])), min(asked[1], int(kspace.shape[-1])))
    maps, eigs, shrunk = [], [], []
    for i, sl in enumerate(flat):
        calib = calibration_region(sl, asked)
        _check_calibration(calib, i, len(flat))
        block = _acquired_block(calib, asked, kernel, i, len(flat))
        if block != asked:
            shrunk.append((i, block))
        m, e = _espirit_slice(
            sl,
            block,
            kernel,
            thresh,
            crop,
            max_iter,
            chunk_size,
            coarse,
        )
        maps.append(m)
        eigs.append(e)
    if shrunk:
        i, block = shrunk[0]
        where = f" (slice {i} of {len(flat)} and {len(shrunk) - 1} more)" if len(flat) > 1 else ""
        warnings.warn(f"espirit_maps: kspace is fully sampled over a centred {block} block only"
                      f"{where}, smaller than calib_width {asked} (unsampled zeros inside the "
                      f"block spoil the maps): calibrated on the {block} block, as the pipelines' "
                      "calibration (and BART's ecalib, on even bands) do; pass "
                      f"calib_width={block} to silence this", stacklevel=2)
    maps_t = torch.stack(maps).reshape(kspace.shape)
    if return_eigenvalues:
        return maps_t, torch.stack(eigs).reshape(lead + tuple(kspace.shape[-2:]))
    return maps_t


def _check_calibration(calib: Tensor, index: int, count: int) -> None:
    """A calibration block with NaN / Inf or no data is refused naming the slice (both failed
    inside an FFT of no kernels: "MKL FFT error: Inconsistent configuration parameters")."""
    finite, nonzero = finite_and_nonzero(calib)
    where = f"slice {index} of {count}: " if count > 1 else ""
    if not finite:
        raise ValueError(f"espirit_maps: {where}the {tuple(calib.shape[-2:])} calibration block "
                         f"of kspace holds {nonfinite_count(calib)} NaN or Inf samples")
    if not nonzero:
        raise ValueError(f"espirit_maps: {where}the {tuple(calib.shape[-2:])} calibration block "
                         "of kspace is all zero: k-space must be centred (DC at (H // 2, W // 2), "
                         "as fft2c gives) with a fully sampled centre")


#: Fewest positions a kernel must take along each side of the calibration block. With one (a
#: kernel as wide as a 4-column band) the maps came back all zero without a word; with two
#: (kernel 3) nonzero on 16 % of the object; with three (kernel 2) on all of it (48 x 48, 4
#: coils, a (24, 4) block: CG-SENSE relative error 1.000 / 0.931 / 0.586; the same across rows).
MIN_KERNEL_POSITIONS = 3


def largest_kernel(side: int) -> int:
    """The widest ESPIRiT kernel, in samples, that takes :data:`MIN_KERNEL_POSITIONS` positions
    along a calibration block side of ``side`` samples: ``side - 2`` (below 1: none fits). The
    rule of :func:`espirit_maps`' refusal, of :func:`mrirecon.calib.espirit_block`'s clamp and of
    the pipeline's kernel notes."""
    return int(side) - MIN_KERNEL_POSITIONS + 1


def _acquired_block(calib: Tensor, asked: tuple[int, int], kernel: tuple[int, int], index: int,
                    count: int) -> tuple[int, int]:
    """The largest centred block of ``calib`` ``(coils, h, w)`` whose every sample holds data in
    some coil, grown one row or column at a time from the DC sample up to ``asked`` (BART's
    ``ecalib`` finds the same block on an even band; on an odd band of an even axis it takes one
    column fewer, its region starting at ``(N - n) / 2``, not centred on DC); refused when the
    kernel takes fewer than :data:`MIN_KERNEL_POSITIONS` positions along a side of it
    (:func:`largest_kernel`)."""
    held = (calib != 0).any(0)
    size = [int(held[asked[0] // 2, asked[1] // 2]), int(held[asked[0] // 2, asked[1] // 2])]
    growing = [size[0] > 0, size[1] > 0]
    while any(growing):
        for axis in (0, 1):
            if not growing[axis]:
                continue
            trial = list(size)
            trial[axis] += 1
            if trial[axis] > asked[axis] or not bool(calibration_region(held, trial).all()):
                growing[axis] = False
            else:
                size = trial
    fits = (largest_kernel(size[0]), largest_kernel(size[1]))
    if kernel[0] > fits[0] or kernel[1] > fits[1]:
        where = f"slice {index} of {count}: " if count > 1 else ""
        centred = " (no data at DC: is k-space centred, DC at (H // 2, W // 2)?)" if 0 in size else ""
        only = "" if tuple(size) == tuple(asked) else " only"
        sides = " and ".join(f"at most {fits[a]} across its {size[a]} {('rows', 'columns')[a]}"
                             for a in (0, 1) if kernel[a] > fits[a])
        smaller = (f"pass kernel_width=({min(kernel[0], fits[0])}, {min(kernel[1], fits[1])}) "
                   "or smaller, " if min(fits) >= 1 else "")
        raise ValueError(f"espirit_maps: {where}kspace is fully sampled over a centred "
                         f"{tuple(size)} block{only}{centred} (the auto-calibration region within "
                         f"calib_width {asked}): kernel_width {kernel} takes fewer than "
                         f"{MIN_KERNEL_POSITIONS} positions across it (the maps come out zero); "
                         f"a kernel must be {sides} ({MIN_KERNEL_POSITIONS} kernel positions must "
                         f"fit): {smaller}or use Walsh maps or a mask with a wider fully sampled "
                         "centre")
    return (size[0], size[1])


def _espirit_slice(
    kspace: Tensor,
    calib_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    thresh: float,
    crop: float,
    max_iter: int,
    chunk_size: int,
    coarse: int,
) -> tuple[Tensor, Tensor]:
    c, H, W = kspace.shape
    kh, kw = kernel_shape
    calib = calibration_region(kspace, calib_shape)
    # the maps do not depend on the data's scale, but the Gram matrix of the calibration rows
    # does: at |k| ~ 1e30 (or 1e-20) its squares overflow (underflow) float32 and no kernel
    # survives the threshold. Scaled to a peak of 1, any scanner's k-space units work.
    peak = calib.abs().amax()
    kernels = espirit_kernels(calib / peak if peak > 0 else calib, kernel_shape, thresh)
    dtype, dev = kspace.dtype, kspace.device
    r = _kernel_correlations(kernels) / (kh * kw)  # (c, c, 2kh-1, 2kw-1)
    start = None
    if coarse > 1 and max_iter > FINE_STEPS and min(H, W) >= 8 * coarse:
        start = _coarse_start(r, H, W, coarse, max_iter, chunk_size, dtype)
    t = _column_factor(r, W, torch.arange(W, device=dev), dtype)
    rows_per_chunk = max(1, chunk_size // W)
    maps = kspace.new_zeros((c, H, W))
    eig = kspace.real.new_zeros((H, W))
    tol = 64 * torch.finfo(kspace.real.dtype).eps

    def chunk(r0: int) -> None:  # rows r0.. of maps and eig (disjoint per chunk)
        rows = torch.arange(r0, min(H, r0 + rows_per_chunk), device=dev)
        gram = _gram_rows(t, H, rows, c, dtype)  # (rows * W, c, c)
        if start is None:
            vec, val = power_iteration(gram, max_iter)
        else:
            vec, val = _refine(gram, start[r0 : r0 + len(rows)].reshape(-1, c), max_iter, tol)
        maps[:, r0 : r0 + len(rows)] = vec.reshape(len(rows), W, c).permute(2, 0, 1)
        eig[r0 : r0 + len(rows)] = val.reshape(len(rows), W)

    starts = range(0, H, rows_per_chunk)
    if dev.type == "cpu":
        map_tasks(chunk, starts)  # chunks on separate threads (mrirecon.core.parallel)
    else:
        for r0 in starts:
            chunk(r0)
    phase = torch.sgn(maps[_reference_coil(calib)])
    phase.masked_fill_(phase == 0, 1)  # a zero entry leaves the pixel's phase, not zeroes it
    return maps.mul_(phase.conj() * (eig > crop)), eig  # the reference's phase and the crop


def _reference_coil(calib: Tensor) -> int:
    """Coil 0, or the coil with the most energy in ``calib`` ``(coils, h, w)`` where coil 0
    holds less than :data:`REFERENCE_MIN_SHARE` of it (float64: no overflow at any scale)."""
    energy = calib.abs().double().square().sum((-2, -1))
    return 0 if energy[0] >= REFERENCE_MIN_SHARE * energy.max() else int(energy.argmax())


def _coarse_start(r: Tensor, H: int, W: int, coarse: int, max_iter: int, chunk_size: int,
                  dtype: torch.dtype) -> Tensor:
    """Dominant eigenvectors of ``G`` on a grid ``coarse`` times coarser (``max_iter`` steps),
    phase-aligned to the strongest coil and interpolated bilinearly to ``(H, W, c)``."""
    c = r.shape[0]
    hc, wc = math.ceil((H - 1) / coarse) + 1, math.ceil((W - 1) / coarse) + 1
    rows = torch.linspace(0, H - 1, hc, dtype=torch.float64, device=r.device)  # exact end points
    cols = torch.linspace(0, W - 1, wc, dtype=torch.float64, device=r.device)
    t = _column_factor(r, W, cols, dtype)
    vec = r.new_empty((hc, wc, c))
    step = max(1, chunk_size // wc)  # bounded memory, as at full resolution
    for r0 in range(0, hc, step):
        gram = _gram_rows(t, H, rows[r0 : r0 + step], c, dtype)
        vec[r0 : r0 + step] = power_iteration(gram, max_iter)[0].reshape(-1, wc, c)
    strongest = int(vec.abs().mean((0, 1)).argmax())
    vec = vec * torch.sgn(vec[..., strongest : strongest + 1]).conj()
    planes = torch.view_as_real(vec).reshape(hc, wc, 2 * c).permute(2, 0, 1).unsqueeze(0)
    fine = torch.nn.functional.interpolate(planes, size=(H, W), mode="bilinear", align_corners=True)
    return torch.view_as_complex(fine[0].permute(1, 2, 0).reshape(H, W, c, 2).contiguous())


def _refine(gram: Tensor, start: Tensor, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """:data:`FINE_STEPS` power steps from ``start``; pixels whose relative eigen-residual stays
    above ``tol`` are redone with ``max_iter`` steps from a vector of ones."""
    vec, val = power_iteration(gram, FINE_STEPS, start=start)
    v = vec.unsqueeze(-1)
    res = sum_abs2(gram @ v - val[:, None, None] * v, (-2, -1)).sqrt()
    slow = (res > tol * val).nonzero().squeeze(-1)
    if slow.numel():
        vec[slow], val[slow] = power_iteration(gram[slow], max_iter)
    return vec, val
