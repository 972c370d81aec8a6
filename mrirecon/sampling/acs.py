"""The fully sampled centre band (auto-calibration signal, ACS) of a Cartesian column mask: one
rule for the pipeline's calibration / GRAPPA and E2E-VarNet's sensitivity estimation."""

from __future__ import annotations

import torch
from torch import Tensor


def acs_bounds(columns: Tensor, num_low_frequencies: int | None = None, *,
               symmetric: bool = True) -> tuple[Tensor, Tensor]:
    """Start and stop column (exclusive), each ``(B,)``, of the fully sampled centre band.

    Parameters
    ----------
    columns
        Column masks ``(B, W)`` (bool or 0/1), DC at column ``W // 2``.
    num_low_frequencies
        Known band width (e.g. from the mask function); the band is then
        ``[(W - n + 1) // 2, (W - n + 1) // 2 + n)`` (fastMRI's placement) whatever the mask.
    symmetric
        ``True`` (E2E-VarNet, fastMRI's rule): the widest run of sampled columns symmetric about
        ``W // 2``, ``n = 2 min(left, right)`` with ``left`` sampled columns directly left of
        the centre and ``right`` from the centre on, at least 1 column, placed as above.
        ``False`` (calibration, GRAPPA): the whole contiguous run of sampled columns through
        ``W // 2``, ``[W//2 - left, W//2 + right)``; empty (width 0) when the centre column is
        not sampled.

    Notes
    -----
    A run that reaches the edge of k-space counts in full (a fully sampled mask is one band of
    ``W`` columns). fastMRI's implementation uses ``argmin`` of the mask, which returns 0 for
    an all-sampled side and so gives a band of 1 column for a fully sampled mask.
    """
    if columns.ndim != 2:
        raise ValueError(f"acs_bounds: columns must be (B, W), got {tuple(columns.shape)}")
    b, w = columns.shape
    cent = w // 2
    if num_low_frequencies:
        n = torch.full((b,), int(num_low_frequencies), dtype=torch.long, device=columns.device)
        start = (w - n + 1) // 2
        return start, start + n
    c = (columns != 0).to(torch.long)
    left = torch.cumprod(c[:, :cent].flip(1), dim=1).sum(1)  # sampled run left of the centre
    right = torch.cumprod(c[:, cent:], dim=1).sum(1)  # sampled run from the centre on
    if symmetric:
        n = torch.clamp(2 * torch.minimum(left, right), min=1)
        start = (w - n + 1) // 2
        return start, start + n
    left = torch.where(right > 0, left, torch.zeros_like(left))
    return cent - left, cent + right


def held_columns(kspace: Tensor) -> Tensor:
    """``(W,)`` bool: the columns of k-space ``(coils, H, W)`` that hold data in any coil and
    row (the acquired columns of zero-filled k-space, on its device)."""
    return (kspace != 0).any(dim=-2).any(dim=0)


def acs_width(mask: Tensor) -> int:
    """Width of the contiguous run of sampled columns through the centre of a ``(W,)`` mask
    (0 when the centre column is not sampled): :func:`acs_bounds` with ``symmetric=False``."""
    start, stop = acs_bounds(mask.reshape(1, -1), symmetric=False)
    return int(stop[0] - start[0])
