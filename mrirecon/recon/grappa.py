"""GRAPPA k-space reconstruction for Cartesian data (Griswold et al., MRM 47:1202-1210, 2002).

Each missing sample is a linear combination, across all coils, of the acquired samples inside a
``kernel_size`` window centred on it. The weights depend on which window positions were
acquired (the *sampling pattern*), so they are fitted once per distinct pattern from the fully
sampled calibration (ACS) block by Tikhonov-regularised least squares, as in ``pygrappa.grappa``:

``W = (S^H S + lam0 I)^-1 S^H T``, ``lam0 = lam * ||S^H S||_F / n_sources``,

where the rows of ``S`` are the pattern's sources and ``T`` the centre samples of every window
that lies fully inside the ACS block (``pad_calib=True`` also uses the zero-padded edge windows,
exactly as pygrappa does). All ``S^H S`` / ``S^H T`` come from one Gram matrix of the
ACS windows (sub-blocks per pattern). Patterns are found by a vectorised window view of the
mask (no Python loop over pixels) and sources are gathered for all holes of a pattern at once
(in chunks of ``chunk_size`` holes to bound memory).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.checks import as_tensor
from mrirecon.recon.checks import check_measurements, warn_user


def _check(kspace: Tensor) -> None:
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.ndim != 3:
        got = tuple(kspace.shape) if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"grappa: kspace must be a complex tensor (coils, H, W), got {got}")


def _kernel(kernel_size) -> tuple[int, int]:
    """``(kx, ky)`` of a ``kernel_size`` pair, or of one integer for both axes (``5``, as a
    pipeline's ``--set reconstruct.params.kernel_size=5``: every file had failed with "'int'
    object is not subscriptable")."""
    whole = (numbers.Integral,)
    size = (kernel_size,) * 2 if isinstance(kernel_size, whole) else kernel_size
    try:
        kx, ky = size
        ok = all(isinstance(k, whole) and not isinstance(k, bool) and k >= 1 for k in (kx, ky))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"grappa: kernel_size must be one integer >= 1 or a pair (kx, ky) of "
                         f"them, got {kernel_size!r}")
    return int(kx), int(ky)


def grappa_settings_problem(params: dict) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for a GRAPPA ``kernel_size``, ``calib`` width or ``lam``
    that :func:`grappa` refuses (``None``: fine): the registry's ``settings_problem``, so a
    pipeline refuses them at load (``kernel_size: [5, 0]`` or ``abc`` read and calibrated every
    input, then failed each with torch's words)."""
    from mrirecon.core.checks import count_problem

    if "kernel_size" in params:
        try:
            _kernel(params["kernel_size"])
        except ValueError as err:
            return "kernel_size", str(err).removeprefix("grappa: kernel_size ")
    calib = params.get("calib")
    if calib is not None and not isinstance(calib, Tensor) \
            and (problem := count_problem(calib, 1)) is not None:
        return "calib", f"{problem} (the width of the calibration band, in columns)"
    lam = params.get("lam")
    if isinstance(lam, numbers.Real) and not isinstance(lam, bool) \
            and not (math.isfinite(lam) and lam >= 0):
        return "lam", f"must be a finite number >= 0 (the relative Tikhonov weight), got {lam!r}"
    return None


class CalibrationWidthError(ValueError):
    """An int ``calib`` (a band width, in columns) that the fully sampled run of columns through
    the centre of the k-space does not hold. ``run``: ``(width, start, stop, columns)``, for a
    caller that words it again (:func:`calib_width_message`; ``recon.run``'s default)."""

    run: tuple[int, int, int, int] | None = None


def calib_width_message(width: int, start: int, stop: int, columns: int, *,
                        default: bool = False) -> str:
    """Why ``calib`` ``width`` does not fit the fully sampled run ``[start, stop)`` through the
    centre column of ``columns``, and what to give instead; ``default``: the width is
    ``recon.run("grappa")``'s default (it said "acs width 24", naming no setting)."""
    said = f"calib {width}" + (" (recon.run('grappa')'s default without calib)" * default)
    what = f"{said}, the width of the calibration band in columns,"
    centre = f"the centre column {columns // 2} of the {columns}"
    if width < 1:
        return f"grappa: {what} must be >= 1; or pass the ACS k-space (coils, h, w) as calib"
    if stop == start:
        return (f"grappa: {what} finds no fully sampled band: {centre} was not acquired; pass "
                "the ACS k-space (coils, h, w) as calib (a separate reference scan)")
    wide = f"exceeds the {columns} columns of kspace and " if width > columns else ""
    return (f"grappa: {what} {wide}includes unacquired columns: the fully sampled run through "
            f"{centre} is columns [{start}, {stop}), {stop - start} wide; give calib "
            f"{stop - start} or less (mrirecon run: reconstruct.params.calib, or leave it unset "
            "and the whole band is used), or from Python the ACS k-space (coils, h, w) as calib")


def _centre_run(kspace: Tensor, mask: Tensor | None) -> tuple[int, int]:
    """``[start, stop)``: the run of acquired columns through ``W // 2`` (:func:`acs_region`)."""
    from mrirecon.sampling.acs import acs_bounds, held_columns

    W = kspace.shape[-1]
    if mask is None:
        cols = held_columns(kspace)
    else:  # a numpy mask failed with "'numpy.ndarray' object has no attribute 'to'"
        cols = as_tensor(mask).to(device=kspace.device, dtype=torch.bool)
        cols = cols.any(dim=0) if cols.ndim == 2 else cols
    if cols.shape != (W,):
        raise ValueError(f"grappa: mask must have shape {tuple(kspace.shape[-2:])} or {(W,)}, "
                         f"got {tuple(mask.shape)}")
    start, stop = (int(v[0]) for v in acs_bounds(cols.reshape(1, -1), symmetric=False))
    return start, stop


def acs_region(kspace: Tensor, acs_width: int, mask: Tensor | None = None) -> Tensor:
    """``acs_width`` fully sampled central columns (along W) of ``kspace (coils, H, W)``, all rows.

    The columns lie inside the contiguous run of acquired columns through the centre column
    ``W // 2`` (:func:`mrirecon.sampling.acs_bounds` with ``symmetric=False``), as close to
    centred on ``W // 2`` as that run allows: fastMRI's masks put an odd-width band one column
    off centre, and equispaced lines next to the band extend the run on one side only, so the
    run is in general not symmetric about ``W // 2``. ``mask`` (``(H, W)`` or ``(W,)``,
    acquired samples) decides which columns were acquired (a column counts if any of its rows
    was, as for partial-Fourier rows); default: columns nonzero in some coil and row. Raises
    if the run is narrower than ``acs_width``.
    """
    _check(kspace)
    W = kspace.shape[-1]
    if not 0 < acs_width <= W:
        raise ValueError(f"acs_region: acs_width must be in [1, {W}], got {acs_width}")
    start, stop = _centre_run(kspace, mask)
    if stop - start < acs_width:
        raise ValueError(
            f"acs_region: acs_width {acs_width} includes unacquired columns: the fully sampled "
            f"run through the centre column {W // 2} is columns [{start}, {stop}) "
            f"({stop - start} wide); give a smaller acs_width"
        )
    return _band(kspace, acs_width, start, stop)


def _band(kspace: Tensor, width: int, start: int, stop: int) -> Tensor:
    """The ``width`` columns of the acquired run ``[start, stop)`` nearest centred on ``W // 2``."""
    left = min(max(kspace.shape[-1] // 2 - width // 2, start), stop - width)
    return kspace[..., left : left + width]


def _window_codes(padded_mask: Tensor, kx: int, ky: int) -> Tensor:
    """Integer code of the ``(kx, ky)`` window of acquired samples around every pixel.

    ``padded_mask`` is the ``(H, W)`` mask zero-padded to ``(H + kx - 1, W + ky - 1)``; returns
    ``(H * W,)`` int64 codes, equal exactly when the windows are equal.
    """
    H, W = padded_mask.shape[0] - kx + 1, padded_mask.shape[1] - ky + 1
    if kx * ky <= 62:  # bit i * ky + j set when window sample (i, j) was acquired
        m = padded_mask.to(torch.int64)
        codes = torch.zeros((H, W), dtype=torch.int64, device=m.device)
        for i in range(kx):
            for j in range(ky):
                codes += m[i : i + H, j : j + W] << (i * ky + j)
        return codes.flatten()
    win = padded_mask.unfold(0, kx, 1).unfold(1, ky, 1).reshape(-1, kx * ky)
    return torch.unique(win, dim=0, return_inverse=True)[1]


@accepts_deprecated_names
def grappa(
    kspace: Tensor,
    calib: Tensor | int,
    kernel_size: tuple[int, int] = (5, 5),
    lam: float = 0.01,
    *,
    mask: Tensor | None = None,
    pad_calib: bool = False,
    chunk_size: int = 32768,
    return_unfilled: bool = False,
) -> Tensor | tuple[Tensor, float]:
    """Fill the missing samples of undersampled multi-coil Cartesian k-space.

    Parameters
    ----------
    kspace
        Centred k-space ``(coils, H, W)``, complex64/complex128, zero where not acquired
        (typically undersampled along W with a fully sampled centre band).
    calib
        Fully sampled calibration k-space ``(coils, h, w)`` (e.g. the ACS band), or an int:
        the width of the fully sampled central band of columns of ``kspace`` (all rows); a
        width the acquired run through the centre column does not hold raises
        :class:`CalibrationWidthError` (a ``ValueError``) giving the width that fits.
    kernel_size
        Kernel window ``(kx, ky)`` along ``(H, W)``, in samples (one integer: both); odd sizes
        centre the target.
    lam
        Relative Tikhonov weight (``pygrappa``'s ``lamda``, see the module notes; ``lamda``
        is accepted as a deprecated alias).
    mask
        Acquired samples, boolean ``(H, W)`` or ``(W,)``; default: samples nonzero in any coil.
    pad_calib
        Zero-pad the calibration block by ``k // 2`` on every side before taking training
        windows. This adds the partially empty edge windows that ``pygrappa.grappa`` trains on
        (its output is then reproduced to float precision); the default trains only on
        windows made entirely of measured ACS samples.
    chunk_size
        Holes reconstructed per batched gather (memory ``~ chunk_size * kx * ky * coils``).
    return_unfilled
        Also return the share of the missing samples left empty (their window holds no acquired
        sample: a kernel narrower than the gaps between acquired columns).

    Returns
    -------
    Tensor
        ``(coils, H, W)``: acquired samples unchanged, missing ones estimated. Holes whose
        window holds no acquired sample stay zero.
    """
    _check(kspace)
    if (bad := grappa_settings_problem({"lam": lam})) is not None:  # lam -1: a singular solve
        raise ValueError(f"grappa: lam {bad[1]}")
    # as run: one NaN sample spread to ~1500 estimated ones, all-zero k-space gave a bare ACS error
    check_measurements("grappa", kspace, None, kspace=True, arg="kspace")
    c, H, W = kspace.shape
    if c > max(64, W):  # pygrappa's (rows, cols, coils) read as 96 coils of 96 x 8 k-space gave
        # an image worse than zero-filled, without a word
        warn_user(f"grappa: kspace {tuple(kspace.shape)} is read as {c} coils of {H} x {W} "
                  "k-space, more coils than columns: is it in pygrappa's (rows, cols, coils) "
                  "layout? mrirecon's is (coils, H, W): pass kspace.permute(2, 0, 1)")
    kx, ky = _kernel(kernel_size)
    if mask is None:
        mask = (kspace != 0).any(dim=0)
    else:
        mask = as_tensor(mask).to(device=kspace.device, dtype=torch.bool)
        if mask.shape == (W,):
            mask = mask.expand(H, W)
        if mask.shape != (H, W):
            raise ValueError(
                f"grappa: mask must have shape {(H, W)} or {(W,)}, got {tuple(mask.shape)}"
            )
    width = calib if isinstance(calib, int) else None
    if width is not None:  # the band inside the acquired centre run, see acs_region
        start, stop = _centre_run(kspace, mask)
        if not 0 < width <= stop - start:  # it said "acs width 10", no setting of that name
            err = CalibrationWidthError(calib_width_message(width, start, stop, W))
            err.run = (width, start, stop, W)
            raise err
        calib = _band(kspace, width, start, stop)  # acs_region's band, its run found once
    if not isinstance(calib, Tensor) or calib.ndim != 3 or calib.shape[0] != c:
        got = tuple(calib.shape) if isinstance(calib, Tensor) else type(calib).__name__
        raise ValueError(f"grappa: calib must be an int or a tensor ({c}, h, w), got {got}")
    if calib.shape[1] < kx or calib.shape[2] < ky:  # it blamed calib, which a run chose itself
        h, w = calib.shape[1:]
        block = (f"calib {width}: that many fully sampled centre columns, all rows"
                 if width is not None else "the calib block given")
        raise ValueError(
            f"grappa: kernel_size {(kx, ky)} does not fit: the calibration block ({h} rows x "
            f"{w} columns, {block}) is smaller than the kernel; give kernel_size at most "
            f"({min(kx, h)}, {min(ky, w)}) (mrirecon run: reconstruct.params.kernel_size), or "
            "more calibration columns"
        )
    if not calib.is_complex():  # cast to complex, it lost its phase: 0.044 -> 0.108 error
        raise TypeError(f"grappa: calib is real ({calib.dtype}), but calibration k-space is "
                        "complex: a real block has lost its phase (abs(), .real or a cast); "
                        "pass the complex ACS k-space")
    calib = calib.to(kspace.dtype)
    px, py = kx // 2, ky // 2
    if pad_calib:  # k // 2 on every side, as pygrappa (for even kernels one more at the far side)
        calib = torch.nn.functional.pad(calib, (py, py, px, px))

    # --- calibration: one Gram matrix of all ACS windows, columns ordered (position, coil)
    centre = (kx // 2) * ky + (ky // 2)
    acs = calib.unfold(1, kx, 1).unfold(2, ky, 1)  # (c, L1, L2, kx, ky)
    rows = acs.permute(1, 2, 3, 4, 0).reshape(-1, kx * ky * c)
    gram = rows.mH @ rows  # (kx*ky*c, kx*ky*c)

    # --- sampling patterns of the holes
    padded_mask = torch.nn.functional.pad(mask, (py, ky - 1 - py, px, kx - 1 - px))
    codes = _window_codes(padded_mask, kx, ky)
    holes = mask.flatten().logical_not().nonzero().flatten()
    uniq, inverse = torch.unique(codes[holes], return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(uniq)).tolist()

    out = kspace.clone()
    padded = torch.nn.functional.pad(kspace, (py, ky - 1 - py, px, kx - 1 - px))
    Wp = W + ky - 1
    samples = padded.reshape(c, -1).T.contiguous()  # (pixels, c): gathers come out (n, nsrc, c)
    out_flat = out.reshape(c, -1)
    grid = (
        torch.arange(kx, device=kspace.device)[:, None] * Wp
        + torch.arange(ky, device=kspace.device)
    ).flatten()
    start, unfilled = 0, 0
    for n_holes in counts:
        members = holes[order[start : start + n_holes]]
        start += n_holes
        h0, w0 = divmod(int(members[0]), W)
        pos = padded_mask[h0 : h0 + kx, w0 : w0 + ky].flatten().nonzero().flatten()
        if len(pos) == 0:
            unfilled += n_holes
            continue  # no acquired neighbour: leave the hole empty
        src_cols = (pos[:, None] * c + torch.arange(c, device=kspace.device)).flatten()
        tgt_cols = centre * c + torch.arange(c, device=kspace.device)
        shs = gram[src_cols][:, src_cols]
        sht = gram[src_cols][:, tgt_cols]
        lam0 = lam * torch.linalg.matrix_norm(shs) / shs.shape[0]
        reg = torch.eye(shs.shape[0], dtype=shs.dtype, device=shs.device) * lam0
        if lam > 0:
            weights = torch.linalg.solve(shs + reg, sht)  # (nsrc*c, c)
        else:  # the minimum-norm fit: with fewer calibration windows than unknowns the normal
            # matrix is singular, and solve returned weights 18x off without a word
            weights = torch.linalg.pinv(shs, hermitian=True) @ sht
        offsets = grid[pos]
        for k0 in range(0, n_holes, chunk_size):
            pix = members[k0 : k0 + chunk_size]
            base = (pix // W) * Wp + (pix % W)  # window top-left in the padded grid
            src = samples[base[:, None] + offsets[None, :]].reshape(
                len(pix), -1
            )  # (position, coil)
            out_flat[:, pix] = (src @ weights).T
    if return_unfilled:
        return out, unfilled / max(len(holes), 1)
    return out
