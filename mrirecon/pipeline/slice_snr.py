"""What the training-range checks measure on a Cartesian MRI slice: its imaging mask's centre
band (:func:`mask_band`) and its k-space SNR (:func:`kspace_snr_db`), in the terms a model card
states them (split from :mod:`mrirecon.pipeline.model_range`, which compares them with the
card)."""

from __future__ import annotations

import math
from typing import Any

def mask_band(s: Any) -> tuple[int, int]:
    """``(start, stop)`` columns of Cartesian slice ``s``'s centre band in its imaging mask: the
    contiguous sampled acquirable columns through the centre
    (:func:`~mrirecon.sampling.acs.acs_bounds`, ``symmetric=False``; width 0 when the centre
    column is not sampled)."""
    from mrirecon.sampling.acs import acs_bounds

    sampled = s.mask.reshape(-1).bool().cpu() & s.header.acquired_columns(s.mask.numel()).cpu()
    start, stop = (int(v) for v in acs_bounds(sampled[None], symmetric=False))
    return start, stop


def kspace_snr_db(config: Any, s: Any, band: tuple[int, int] | None = None
                  ) -> tuple[float, str] | None:
    """``(SNR in dB, what the noise was estimated from)`` of Cartesian MRI slice ``s`` as the
    model gets it, in ``mrirecon simulate mri --snr-db``'s terms: mean signal power per sample
    of the fully sampled acquired grid over the noise power per sample. ``None`` when too few
    samples tell the noise.

    The noise power per sample (mean over the coils) is the noise scan's covariance when the
    slice has one (1 when ``preprocess.prewhiten`` whitened the data with it, coil compression
    keeping it white), else the outer readout rows' noise
    (:func:`~mrirecon.pipeline.checks_noncart.slice_noise`, the estimate the non-Cartesian data
    residual is measured against), where an object's k-space is weakest
    (:data:`~mrirecon.pipeline.model_range.SNR_DB_MARGIN` says how weak). The signal power counts the centre band (``band``:
    :func:`mask_band`, computed here when not given) once and the other sampled columns for the
    acquirable ones they stand for (an undersampled mask samples the bright centre densely), on
    the rows as acquired (a readout crop keeps the signal on fewer rows)."""
    import torch

    from mrirecon.pipeline.checks_noncart import slice_noise

    k = s.kspace
    if k.ndim != 3:
        return None
    coils, h, w = k.shape
    acquirable = s.header.acquired_columns(w).cpu()
    sampled = s.mask.reshape(-1).bool().cpu() & acquirable
    start, stop = mask_band(s) if band is None else band
    band = torch.zeros(w, dtype=torch.bool)
    band[start:stop] = True
    k = k.detach().cpu().to(torch.complex128)
    power = k[..., band].abs().square().sum()
    outer, stands_for = sampled & ~band, acquirable & ~band
    if bool(outer.any()):
        power = power + k[..., outer].abs().square().sum() * (stands_for.sum() / outer.sum())
    rows = int(s.acquired_rows or h)
    power = float(power) / (coils * rows * max(int(acquirable.sum()), 1))
    found = slice_noise(s, bool(config.preprocess.prewhiten))
    if found is None:
        return None
    noise, source = found[0] ** 2, found[1]
    if not noise > 0:
        return None  # noise-free
    return 10 * math.log10(max(power - noise, 1e-30 * noise) / noise), source
