"""Calibration-only lines of a Cartesian ISMRMRD scan (:mod:`mrirecon.io.ismrmrd_raw`): the
same scan's ACS, which fill the imaging data's gaps, or a separate reference scan, which is
kept apart (``KSpace.calibration``) and used for calibration only.

Scanners acquire the GRAPPA / SENSE reference either inside the imaging scan (integrated ACS,
``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` or calibration-only lines of the same contrast) or
as a scan of its own (Siemens' separate reference, often of another contrast or receiver gain):
the imaging lines are then every R-th line only, and the reference lines must never be averaged
into them.
"""

from __future__ import annotations

import numpy as np

from mrirecon.containers import Header

#: Calibration-only lines that differ from the imaging lines at the same positions by more than
#: this (relative) come from another scan (a separate reference of other contrast or gain).
CALIBRATION_MISMATCH = 0.3


def separate_reference(header: Header, grids: dict,
                       borrowed: str | None = None) -> tuple[np.ndarray | None, Header]:
    """Sort the calibration-only lines (``grids[True]``: sum, count, energy, rows, like the
    imaging lines' ``grids[False]``, whose arrays are updated in place).

    Lines of the same scan (the ACS of an integrated GRAPPA acquisition) agree with the imaging
    lines at the same positions up to noise: they fill the positions no imaging line has. A
    separate reference scan (header ``calibrationMode`` ``separate`` / ``external``, or lines
    that differ from the imaging lines at the same positions by more than
    :data:`CALIBRATION_MISMATCH`: another contrast or gain) is returned apart, ``(slices, z,
    coils, x, y)`` averaged over repeats and zero elsewhere, and ``header.extra
    ["calibration_note"]`` says so; it never enters the image data. Lines taken from another
    counter value than the image's (``borrowed``, e.g. ``"repetition 0"``: a reference scan
    acquired once for the series, :func:`~mrirecon.io.ismrmrd_encoding.select_counters`) are
    always a separate reference: another repetition's lines must not fill this one's gaps."""
    if True not in grids:
        return None, header
    kspace, count, energy, rows = grids[False]
    ck, ccount, cenergy, crows = grids[True]
    overlap = (count > 0) & (ccount > 0)
    mismatch = None
    if overlap.any():  # the same scan's ACS agree with its imaging lines up to noise
        got = np.moveaxis(ck, 4, 2)[overlap] / ccount[overlap][:, None, None]
        ref = np.moveaxis(kspace, 4, 2)[overlap] / count[overlap][:, None, None]
        mismatch = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    mode = header.extra.get("calibration_mode", "")
    same_scan = mismatch is None or mismatch <= CALIBRATION_MISMATCH
    if borrowed is None and mode not in ("separate", "external") and same_scan:
        gap = (count == 0) & (ccount > 0)
        kspace += ck * gap[:, :, None, None, :]
        count += ccount * gap
        energy += cenergy * gap
        rows[0], rows[1] = min(rows[0], crows[0]), max(rows[1], crows[1])
        return None, header
    calibration = ck / np.maximum(ccount, 1)[:, :, None, None, :].astype(np.float32)
    held = ccount > 0  # (slices, z, y)
    cols = np.flatnonzero(held.any(axis=(0, 1)))
    per_slice = held.any(axis=1).sum(axis=-1)
    span = (f"columns {cols[0]}..{cols[-1]}" if cols[-1] - cols[0] + 1 == cols.size
            else f"columns {cols.tolist()}")
    why = (f"taken from {borrowed}" if borrowed is not None else
           f"header calibrationMode {mode!r}" if mode in ("separate", "external") else
           "their calibration-only lines (ACQ_IS_PARALLEL_CALIBRATION) differ from the imaging "
           f"lines at the same {int(overlap.sum())} positions by {mismatch:.0%}: another contrast "
           "or gain")
    lines = (f"{int(per_slice.max())}" if per_slice.min() == per_slice.max()
             else f"{int(per_slice.min())}-{int(per_slice.max())}")
    note = (f"separate reference scan ({why}): {lines} reference lines per slice ({span} of "
            f"{kspace.shape[-1]}) are used only for calibration: the coil maps and the GRAPPA "
            "kernel come from them; the image is reconstructed from the imaging lines alone")
    return calibration, header.with_(extra={**header.extra, "calibration_note": note})
