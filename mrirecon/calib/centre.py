"""Coil maps from the fully sampled centre of Cartesian k-space: one rule for every caller.

The pipeline's ``calibrate`` stage, the training data and the training validation all call
:func:`centre_maps`, so a learned model sees at inference the maps it was trained with.

ESPIRiT block and kernels for a centre band of ``n`` columns: the block keeps
``min(calib_rows, H)`` rows (the readout is fully sampled) and the ``n`` band columns; kernels are
``min(kernel_width, rows - 2)`` along the readout and ``min(kernel_width, n - 2)`` across the
band, so that at least three kernel positions fit along each side of the block
(:func:`~mrirecon.calib.espirit.largest_kernel`; :func:`~mrirecon.calib.espirit.espirit_maps`
refuses a wider kernel: with one position the maps came out zero). On simulated 8-coil
128 x 128 brains with fastMRI equispaced-fraction masks this gives CG-SENSE PSNR 23.2 dB at 4x
(10-column band) and 18.8 dB at 8x (5 columns), against 22.4 / 18.3 dB with kernels half the
band wide; bands of 12 or more columns get the full ``kernel_width`` either way.

The ESPIRiT crop (maps zeroed where the dominant eigenvalue is ``<= crop``) is meant to remove
the background. From a narrow band the eigenvalues stay below it inside the object too, and the
maps are then zero over tissue, which every SENSE-type reconstruction returns as black: CG-SENSE
6.7 dB against 19.0 dB without the crop on a simulated 96 x 80 brain at 4x (7-column band),
14.9 against 22.3 dB on a 128 x 128 one. :func:`centre_maps` therefore lowers the crop of a
slice until the pixels it zeroes hold at most ``max_cropped_energy`` (default
:data:`MAX_CROPPED_ENERGY`, 0.5 %) of the band's low-resolution image energy (summed over coils).
Well-calibrated slices cut less than that (0.1-0.3 % at 320 x 320 and 640 x 320 with fastMRI's
0.08 / 0.04 centre fractions: crop unchanged); on simulated 64-128 px brains at 4x / 8x the
lowered crop recovers 2-13 dB and lands within 0.7 dB of the best fixed crop of 0.5-0.95.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mrirecon.calib.espirit import largest_kernel
from mrirecon.core.magnitude import power_of_two_above
from mrirecon.functional import ifft2c

#: Largest share of the centre band's low-resolution image energy that the ESPIRiT crop may zero
#: (module docstring); above it the crop is lowered for that slice.
MAX_CROPPED_ENERGY = 0.005


def centre_window(columns: Tensor, width: int) -> Tensor:
    """The acquired ``columns`` (boolean ``(W,)``) among the ``width`` columns centred on DC
    (``W // 2 - width // 2`` on, as ESPIRiT's ``calibration_region`` places its block): the
    calibration columns of ``mrirecon run``'s calibrate stage and of the training data alike (the
    rule was written in both)."""
    n = columns.numel()
    win = torch.zeros(n, dtype=torch.bool, device=columns.device)
    win[n // 2 - width // 2: n // 2 - width // 2 + width] = True
    return win & columns.reshape(-1).bool()


def centred_width(centre: Tensor) -> int:
    """The width of the largest block of ``centre`` ``(W,)`` columns placed as ESPIRiT places
    its calibration region (``W // 2 - n // 2`` on) whose every column is marked, grown from DC
    one column at a time (:func:`~mrirecon.calib.espirit.espirit_maps` shrinks its block to
    it). A one-sided ACS run (columns 62-89 about DC 64) or lattice columns inside the window
    were counted whole: the kernel was clamped to 28 columns, and the 5 ESPIRiT calibrates on
    refused it, failing the slice."""
    cols = centre.reshape(-1).bool().cpu()
    n, w = 0, cols.numel()
    while n < w and bool(cols[w // 2 - (n + 1) // 2: w // 2 - (n + 1) // 2 + n + 1].all()):
        n += 1
    return n


def espirit_block(centre_columns: int, rows: int, *, calib_rows: int = 24,
                  kernel_width: int = 6) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(block, kernel)`` shapes of the ESPIRiT calibration for a band of ``centre_columns``:
    ``kernel_width`` clamped to :func:`~mrirecon.calib.espirit.largest_kernel` of each side of
    the block (3 kernel positions must fit, the rule :func:`espirit_maps` refuses by)."""
    n, r = int(centre_columns), min(int(calib_rows), int(rows))
    if largest_kernel(n) < 1:
        raise ValueError(f"ESPIRiT needs a fully sampled centre band of at least 3 columns, got {n} "
                         "(use calibrate.method=walsh, or a mask with a wider centre)")
    if largest_kernel(r) < 1:
        raise ValueError(f"ESPIRiT needs a calibration block of at least 3 rows, got {r} (use "
                         "calibrate.method=walsh)")
    return (r, n), (min(int(kernel_width), largest_kernel(r)),
                    min(int(kernel_width), largest_kernel(n)))


def centre_maps(kspace: Tensor, centre: Tensor, *, method: Literal["espirit", "walsh"] = "espirit",
                calib_rows: int = 24, kernel_width: int = 6, thresh: float = 0.02,
                crop: float = 0.95, max_cropped_energy: float | None = MAX_CROPPED_ENERGY,
                return_crop: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Coil maps ``(..., C, H, W)`` from the columns ``centre`` ``(W,)`` bool of ``kspace``.

    ``centre`` marks the contiguous fully sampled band around ``W // 2`` (what every mask of
    the batch acquires); k-space outside it is not used. ``method="walsh"`` takes the Walsh maps
    of the band's low-resolution coil images.

    ESPIRiT's ``crop`` is lowered per slice where it would zero more than
    ``max_cropped_energy`` of the band image's energy (module docstring; ``None`` keeps
    ``crop`` as given). ``return_crop``: also return the crop applied per slice, ``(...)``.
    """
    centre = centre.reshape(-1).bool().to(kspace.device)
    if centre.numel() != kspace.shape[-1]:
        raise ValueError(f"centre_maps: centre mask has {centre.numel()} columns, k-space "
                         f"{kspace.shape[-1]}")
    low = kspace * centre
    if method == "espirit":
        from mrirecon.calib.espirit import espirit_maps

        block, kernel = espirit_block(centred_width(centre), kspace.shape[-2],
                                      calib_rows=calib_rows, kernel_width=kernel_width)
        if max_cropped_energy is not None and not 0 <= max_cropped_energy < 1:
            raise ValueError(f"centre_maps: max_cropped_energy must be in [0, 1), got "
                             f"{max_cropped_energy}")
        if crop <= 0 or max_cropped_energy is None:
            maps = espirit_maps(low, calib_width=block, kernel_width=kernel, thresh=thresh,
                                crop=crop)
            applied = torch.full(kspace.shape[:-3], float(crop), dtype=torch.float64,
                                 device=kspace.device)  # on the device, as safe_crop's
        else:
            maps, eig = espirit_maps(low, calib_width=block, kernel_width=kernel, thresh=thresh,
                                     crop=0.0, return_eigenvalues=True)
            energy = _band_energy(low)
            applied = safe_crop(eig, energy, crop, max_cropped_energy)
            maps = maps * (eig.double() > applied[..., None, None]).unsqueeze(-3)
        return (maps, applied) if return_crop else maps
    if method == "walsh":
        from mrirecon.calib.walsh import walsh_maps

        maps = walsh_maps(ifft2c(low))
        none = torch.zeros(kspace.shape[:-3], dtype=torch.float64, device=kspace.device)
        return (maps, none) if return_crop else maps
    raise ValueError(f"centre_maps: method must be 'espirit' or 'walsh', got {method!r}")


def _band_energy(low: Tensor) -> Tensor:
    """``(..., H, W)``: the band's low-resolution image energy summed over coils, of each slice
    scaled by the power of two just above its peak magnitude. :func:`safe_crop` uses only its
    shares, which an exact power-of-two scale leaves bit-identical; at the data's own scale the
    squares underflowed (k-space at 1e-30: all 0) or overflowed (1e30: Inf) float32, and the crop
    safeguard switched itself off without a word."""
    magnitude = ifft2c(low).abs()
    peak = magnitude.reshape(*magnitude.shape[:-3], -1).amax(-1)
    scale = power_of_two_above(peak)[..., None, None, None]
    return (magnitude / scale).square().sum(-3)


#: Relative precision to which :func:`safe_crop` takes ESPIRiT's eigenvalues, in units of their
#: dtype's epsilon (9.5e-7 in float32). With the kernels decomposed in double precision
#: (:func:`~mrirecon.calib.espirit.espirit_kernels`) the float32 eigenvalues of a 96 x 80, 4-coil
#: slice are bit-identical at 1 and 2 CPU threads and differ by 3.6e-7 relative at most between
#: ATen's AVX-512 and default (no SIMD) kernels (another CPU); from complex64 kernels they had
#: differed by up to 1.8e-5 between thread counts.
EIGENVALUE_ULPS = 8

#: Least width of a gap of the eigenvalues, in precisions (:data:`EIGENVALUE_ULPS`, relative to
#: the gap's upper side), that :func:`safe_crop` places a lowered crop in: 7.6e-6 relative in
#: float32. Each side may move by a precision in either of two runs and the crop lies within an
#: eighth of the gap of its middle, so it stays 3 precisions from both.
GAP_PRECISIONS = 8


def safe_crop(eigenvalues: Tensor, energy: Tensor, crop: float, max_share: float) -> Tensor:
    """Per slice ``(...)``: ``crop``, or a lower threshold whose cut pixels (``eigenvalues <=
    threshold``) hold at most ``max_share`` of ``energy``'s sum, placed in a gap of the
    eigenvalues that their rounding cannot close.

    ``eigenvalues`` and ``energy`` are ``(..., H, W)``. ``crop`` comes back as given (exactly:
    0.95 is no float32) when its own cut fits the share. Else the cut grows from the smallest
    eigenvalue up to the largest one that fits, but it may end only where the next eigenvalue
    lies more than :data:`GAP_PRECISIONS` precisions above (the precision: :data:`EIGENVALUE_ULPS`
    times the dtype's epsilon, relative to that next value); the threshold is the decimal with
    the fewest digits within an eighth of the gap of its middle, so it lies at least 3/8 of the
    gap (3 precisions) from either side. Eigenvalues that rounding could reorder are cut
    together or kept together, perturbing every eigenvalue by a precision (about 1e-6 relative)
    moves no pixel across, and ``--set calibrate.crop=<threshold> --set
    calibrate.max_cropped_energy=null`` repeats the cut, on another CPU too. The threshold used
    to sit one float32 ulp below the first kept eigenvalue: two pixels 1.8e-6 apart (2.5e-6
    relative) swapped places between 1 and 2 threads on a simulated slice (complex64 kernels),
    the maps moved by 2.2 % and the TV image by 0.6 %; and the crop printed to 2 decimals could
    not be pinned. Which gap is chosen can still change where a gap's width lies within a
    rounding of the least width (as any choice of a threshold from rounded values can): rare
    once the eigenvalues differ by 1e-7, not 1e-5. 0 (no crop) when no such gap fits the share.
    """
    ev = eigenvalues.reshape(-1, eigenvalues.shape[-2] * eigenvalues.shape[-1]).double()
    en = energy.reshape(ev.shape).double()
    precision = EIGENVALUE_ULPS * torch.finfo(eigenvalues.dtype).eps
    total = en.sum(-1)
    # crop as given when what it cuts fits (the pixels <= crop; any order of them)
    as_given = (en * (ev <= float(crop))).sum(-1) <= max_share * total
    values, order = torch.sort(ev, dim=-1)
    cut = torch.cumsum(en.gather(-1, order), dim=-1)  # energy cut up to and including i
    lo, hi = values[:, :-1], values[:, 1:]
    gap = hi - lo
    # a cut may end between i and i + 1 only where that gap is wide and the cut fits
    ends = (gap > GAP_PRECISIONS * precision * hi.abs()) & (cut[:, :-1] <= max_share * total[:, None])
    out = []
    for b in range(ev.shape[0]):
        if bool(as_given[b]):
            out.append(float(crop))
            continue
        ok = torch.nonzero(ends[b]).flatten()
        if ok.numel() == 0:
            out.append(0.0)
            continue
        i = int(ok[-1])
        out.append(min(_shortest_within(float(lo[b, i]), float(hi[b, i])), float(crop)))
    return torch.tensor(out, dtype=torch.float64, device=eigenvalues.device).reshape(
        eigenvalues.shape[:-2])


def _shortest_within(lo: float, hi: float) -> float:
    """The decimal with the fewest digits within ``(hi - lo) / 8`` of ``(lo + hi) / 2``: a crop
    that prints exactly (``--set calibrate.crop=...`` repeats it) and lies near the middle."""
    mid, slack = (lo + hi) / 2, (hi - lo) / 8
    for digits in range(1, 18):
        value = round(mid, digits)
        if abs(value - mid) <= slack:
            return value
    return mid


__all__ = ["EIGENVALUE_ULPS", "GAP_PRECISIONS", "MAX_CROPPED_ENERGY", "centre_maps", "espirit_block",
           "safe_crop"]
