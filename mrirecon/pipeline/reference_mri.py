"""A separate parallel-imaging reference scan in the MRI pipeline (``MRISlice.calibration``).

Scanner-style: the reference lines (ISMRMRD ``calibrationMode`` separate, or calibration-only
lines of another contrast or gain; :mod:`mrirecon.io.ismrmrd_reference`) serve calibration
only. ``preprocess`` gives them every transform the imaging k-space gets (readout oversampling
removal, prewhitening with the same noise scan, coil compression with the same matrix,
:func:`compress_coils`), ``to_device`` moves them, ``calibrate`` takes the ESPIRiT / Walsh
centre band from them and GRAPPA trains its kernel on them (:func:`calibration_data`). They are
never mixed into the imaging data, whose mask has no fully sampled centre band of its own.

Learned models that estimate their coil maps from the k-space's own centre (E2E-VarNet) cannot
use them and are refused (:func:`refuse_own_acs_model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mrirecon.sampling.acs import acs_width, held_columns

if TYPE_CHECKING:
    from mrirecon.pipeline.slice_mri import MRISlice


def calibration_data(s: MRISlice) -> tuple[Tensor, Tensor]:
    """``(kspace (coils, H, W), columns (W,))`` to calibrate slice ``s`` from: the separate
    reference scan and the columns it holds when there is one, else the imaging k-space and its
    sampling mask (whose fully sampled centre band is then the calibration band)."""
    if s.calibration is None:
        return s.kspace, s.mask
    return s.calibration, held_columns(s.calibration).to(s.mask.device)


def calibration_width(s: MRISlice) -> int:
    """Width of the fully sampled centre band slice ``s`` calibrates from
    (:func:`calibration_data`; :func:`~mrirecon.sampling.acs.acs_width`)."""
    return acs_width(calibration_data(s)[1])


def calibration_band(s: MRISlice, width: int | None = None) -> Tensor:
    """``(coils, H, w)``: the ``w`` (``width``, default all) columns of the fully sampled centre
    band of :func:`calibration_data` (:func:`mrirecon.recon.grappa.acs_region`)."""
    from mrirecon.recon.grappa import acs_region

    kspace, columns = calibration_data(s)
    full = acs_width(columns)
    if full == 0:
        raise ValueError(f"{s.file_name}: slice {s.index}: the separate reference scan does not "
                         "hold the k-space centre column; nothing to calibrate from")
    return acs_region(kspace, min(full, width or full), columns)


def compress_coils(kspace: Tensor, calibration: Tensor | None, num_virtual: int,
                   method: str) -> tuple[Tensor, Tensor | None]:
    """Coil compression of ``kspace`` ``(coils, H, W)`` to ``num_virtual`` virtual coils, and of
    the separate reference ``calibration`` (or ``None``) with the same matrix: SVD from the
    imaging data (as without a reference), GCC from the reference's centre band (the imaging data
    then have none; without a reference, from the imaging data's central 24 columns, or all of
    them when fewer: gcc_compress refused a 20-column matrix for its default 24)."""
    from mrirecon import calib

    if method == "gcc":
        if calibration is None:
            return calib.gcc_compress(kspace, num_virtual, min(24, kspace.shape[-1]))[0], None
        columns = held_columns(calibration)
        from mrirecon.recon.grappa import acs_region

        band = acs_region(calibration, min(24, max(acs_width(columns), 1)), columns)
        out, mats = calib.gcc_compress(kspace, num_virtual, calib=band)
        return out, calib.gcc_apply(calibration, mats)
    out, matrix = calib.svd_compress(kspace, num_virtual)
    if calibration is None:
        return out, None
    return out, torch.tensordot(matrix.to(calibration.dtype), calibration, dims=([1], [0]))


def refuse_own_acs_model(s: MRISlice, method: str) -> None:
    """Refuse a learned model that estimates its coil maps from the k-space's own fully sampled
    centre (E2E-VarNet) on a slice whose calibration lines are a separate reference scan."""
    if s.calibration is None:
        return
    raise ValueError(
        f"{s.file_name}: slice {s.index}: reconstruct.method {method!r} estimates its coil maps "
        "from the k-space's own fully sampled centre, but this scan's calibration lines are a "
        "separate reference scan (the imaging lines have no centre band, and the reference "
        "cannot enter the model's data); use a pipeline whose coil maps come from the calibrate "
        "stage, which uses the reference: mri_cs (ESPIRiT + l1_wavelet / cg_sense, or "
        "reconstruct.method=grappa) or mri_modl")
