"""DICOM export's pixel quantisation (split from :mod:`mrirecon.io.dicom`, which writes the
series): the stored integers, RescaleSlope / RescaleIntercept (CT) or the real-world scale (MR)
chosen from the data range, and the warning when the integers lose tissue contrast. Values are
computed in float64 a chunk at a time (:data:`CHUNK_VOXELS`), never on a whole-volume float64
copy."""

from __future__ import annotations

import numpy as np

from mrirecon.io.dicom_strings import _ds

_MAX_STORED = {"MR": 65535, "CT": 32767}
#: MR images are stored in 12 bits (0..4095), as scanners do.
MR_MAX_STORED = 4095


#: Voxels converted to float64 at a time by the quantisation and its checks (2 MiB of float64,
#: one 512 x 512 slice): whole-volume float64 copies and temporaries made ``write_dicom_series``
#: peak at 6.5 times a float32 CT volume (+415 MiB for 64 MiB). Every value is computed as
#: before, voxel by voxel.
CHUNK_VOXELS = 1 << 18


def _real_array(data) -> np.ndarray:
    """``data`` in its own precision when real (bool, integer, float); else converted to float64
    as ``np.asarray(data, dtype=np.float64)`` did (a complex array warns, its imaginary part
    dropped). Its ``min`` / ``max`` are then those of a float64 copy (float64 holds a float32
    exactly; rounding integers to float64 keeps their order)."""
    x = np.asarray(data)
    return x if x.dtype.kind in "biuf" else np.asarray(data, dtype=np.float64)


def _float64_chunks(x: np.ndarray):
    """``(start, piece)``: ``x`` flattened (C order) in float64 copies of :data:`CHUNK_VOXELS`
    voxels, ``start`` the piece's first flat index."""
    flat = np.ascontiguousarray(x).reshape(-1)
    for start in range(0, flat.size, CHUNK_VOXELS):
        yield start, flat[start:start + CHUNK_VOXELS].astype(np.float64)


def _float64_values(x: np.ndarray, positive: bool = False) -> np.ndarray:
    """The values of ``x`` (``positive``: those above 0) in C order, in one new float64 array
    filled a chunk at a time: the one float64 copy, for a percentile."""
    count = (sum(int(np.count_nonzero(piece > 0)) for _, piece in _float64_chunks(x))
             if positive else x.size)
    out, at = np.empty(count, np.float64), 0
    for _, piece in _float64_chunks(x):
        kept = piece[piece > 0] if positive else piece
        out[at:at + kept.size] = kept
        at += kept.size
    return out


def _quantised(x: np.ndarray, to_int, dtype) -> np.ndarray:
    """``to_int(float64 data)`` of ``x``'s shape, a chunk at a time: the integers of a
    whole-volume float64 copy (``to_int`` works voxel by voxel)."""
    out = np.empty(x.size, dtype)
    for start, piece in _float64_chunks(x):
        out[start:start + piece.size] = to_int(piece)
    return out.reshape(x.shape)


def _extremes(x: np.ndarray) -> tuple[float, float]:
    return (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)


def _integer_valued(x: np.ndarray) -> bool:
    """Whether every value of ``x`` is an integer (``x == round(x)`` in float64, by chunks)."""
    return x.dtype.kind in "biu" or all(np.array_equal(piece, np.round(piece))
                                        for _, piece in _float64_chunks(x))


def _ct_rescale(x: np.ndarray, lo: float, hi: float) -> tuple[str, str]:
    """CT ``(RescaleSlope, RescaleIntercept)`` of data ``x`` whose range is ``lo .. hi``."""
    top = _MAX_STORED["CT"]
    span = max(abs(lo), abs(hi))
    if span <= top and _integer_valued(x):
        return "1", "0"
    # margin below `top` so the 16-character slope string cannot push values over
    return _ds(span / (top - 0.5) if span > 0 else 1.0), "0"


def _mr_slope(hi: float) -> str:
    """The Real World Value slope that puts the MR maximum ``hi`` at (almost) the 12-bit top."""
    # margin below the top so the 16-character slope string cannot push values over
    return _ds(hi / (MR_MAX_STORED - 0.5) if hi > 0 else 1.0)


def choose_rescale(
    data: np.ndarray, modality: str
) -> tuple[np.ndarray, str, str]:
    """Quantise ``data`` to 16-bit integers for a DICOM Modality LUT (CT).

    Parameters
    ----------
    data
        Real array (any shape) in output units (HU for CT, arbitrary for MR), in any real
        precision: the integers are computed in float64 a chunk at a time
        (:data:`CHUNK_VOXELS`), never on a whole-volume float64 copy.
    modality
        ``"MR"`` (unsigned 0..65535) or ``"CT"`` (signed -32767..32767). MR export itself uses
        :func:`choose_mr_scale` (no Modality LUT, as scanners store MR images).

    Returns
    -------
    stored, slope, intercept
        ``stored`` is uint16 (MR) or int16 (CT) of ``data``'s shape; ``slope`` and
        ``intercept`` are the decimal strings written to the file. With ``s, b`` their float
        values, ``|stored * s + b - data| <= s / 2`` up to float rounding.
    """
    if modality not in _MAX_STORED:
        raise ValueError(f"choose_rescale: modality must be 'MR' or 'CT', got {modality!r}")
    x = _real_array(data)
    top = _MAX_STORED[modality]
    lo, hi = _extremes(x)
    if modality == "CT":
        slope, intercept = _ct_rescale(x, lo, hi)
        s = float(slope)
        stored = _quantised(x, lambda v: np.clip(np.round(v / s), -top, top).astype(np.int16),
                            np.int16)
        return stored, slope, intercept
    base = min(0.0, lo)
    intercept = _ds(base)
    b = float(intercept)
    span = hi - b
    slope = _ds(span / (top - 0.5) if span > 0 else 1.0)
    s = float(slope)
    stored = _quantised(x, lambda v: np.clip(np.round((v - b) / s), 0, top).astype(np.uint16),
                        np.uint16)
    return stored, slope, intercept


def choose_mr_scale(data: np.ndarray, where: str = "MR DICOM export:") -> tuple[np.ndarray, str]:
    """Store an MR magnitude volume the way scanners do: unsigned integers in ``0..MR_MAX_STORED``
    (12 bits), the volume's maximum at the top, and no Modality LUT.

    ``where`` begins the error for negative data (``write_dicom_series`` names its folder).
    ``data`` may be in any real precision; the integers are computed in float64 a chunk at a
    time, as :func:`choose_rescale` does.

    Returns
    -------
    stored, real_world_slope
        ``stored`` uint16 of ``data``'s shape and the decimal string ``s`` with
        ``|stored * s - data| <= s / 2`` (up to float rounding); ``s`` is written to the Real
        World Value Mapping Sequence so the original units can be recovered.
    """
    x = _real_array(data)
    lo, hi = _extremes(x)
    if x.size and lo < 0:
        raise ValueError(f"{where} magnitude data must be >= 0, got minimum {lo:.3g}")
    slope = _mr_slope(hi)
    s = float(slope)
    stored = _quantised(
        x, lambda v: np.clip(np.round(v / s), 0, MR_MAX_STORED).astype(np.uint16), np.uint16)
    return stored, slope


#: Fewest grey levels the bulk of the image (up to its 99.5th percentile) may keep in the
#: stored integers before export warns (8 bits; MR normally keeps ~2,000 of its 4,096).
MIN_TISSUE_LEVELS = 256
#: Widest CT quantisation step (HU) before export warns: soft-tissue contrast is a few HU.
MAX_CT_STEP_HU = 2.0


def quantisation_warning(data: np.ndarray, modality: str) -> str | None:
    """What the DICOM integers lose of ``data`` (HU for CT, magnitude for MR), or ``None``.

    MR is stored in 12 bits scaled to the volume's maximum, so a few hot voxels (a spike, a
    diverged pixel) at 1,000x the tissue leave the tissue a handful of grey levels: a series
    that looks blank. CT beyond +-32,767 HU (no tissue or implant reaches it) needs a slope
    above 1 HU, coarser than soft-tissue contrast."""
    x = _real_array(data)
    if x.size == 0:
        return None
    lo, hi = _extremes(x)  # no whole-volume float64 copy (CHUNK_VOXELS)
    if modality == "CT":
        slope, _ = _ct_rescale(x, lo, hi)
        step = float(slope)
        if step > MAX_CT_STEP_HU:
            return (f"DICOM export: the CT values span {lo:.4g} .. {hi:.4g} HU, beyond "
                    f"the 16-bit range, so the DICOM files store them in steps of {step:.3g} HU "
                    "(soft-tissue contrast is a few HU); the NIfTI and HDF5 outputs keep the "
                    "exact values")
        return None
    if lo < 0:
        return None  # not magnitude data: write_dicom_series refuses it, naming the folder
    slope = _mr_slope(hi)
    positive = _float64_values(x, positive=True)
    if positive.size == 0:
        return None
    bulk = float(np.percentile(positive, 99.5, overwrite_input=True))
    levels = bulk / float(slope)
    if levels < MIN_TISSUE_LEVELS:
        return (f"DICOM export: the MR maximum {hi:.4g} is {hi / bulk:.3g}x the 99.5th "
                f"percentile {bulk:.4g}, so in the 12-bit DICOM files the image below that "
                f"percentile keeps only {int(levels) + 1} grey levels (hot voxels?); the "
                "NIfTI and HDF5 outputs keep the exact values")
    return None
