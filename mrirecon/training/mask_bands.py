"""The masks training draws and the centre bands they leave: what a model card's
``training_range`` states as ``accelerations`` and ``acs_columns`` (every offset of a regular
pattern, every seed of a random one up to a bound), shared by the training sets and the
deployment recipe."""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.sampling import create_mask_for_mask_type
from mrirecon.sampling.acs import acs_width


def drawable_masks(fn, width: int, random_seeds: int = 64) -> list[Tensor]:
    """The masks ``fn`` (one pair of centre fraction and acceleration) draws on ``width``
    columns: every offset of a regular pattern (equispaced and magic masks: offsets 0, 1, ...
    until the mask function refuses one, its period), ``random_seeds`` seeds of a random mask.
    Four seeds gave one offset of a 4x mask on 32 columns, so the model card's range (4 ..
    4.5714) missed the 3.5556x masks that training drew 142 of 450 times."""
    if fn.name == "random":
        return [fn(width, seed=seed) for seed in range(random_seeds)]
    masks = [fn(width, seed=0, offset=0)]
    for offset in range(1, 100 * width):
        try:  # sampling._check_offset: an offset at or past the period is refused
            masks.append(fn(width, seed=0, offset=offset))
        except ValueError:
            break
    return masks


def drawn_bands(mask_type: str, pairs, grids) -> list[int]:
    """The centre bands (:func:`~mrirecon.sampling.acs.acs_width` of the sampled acquirable
    columns: contiguous sampled columns through DC, as ``mrirecon run`` counts them) of every
    mask that ``mask_type`` with the ``(centre fraction, acceleration)`` ``pairs`` draws
    (:func:`drawable_masks`) on each grid: a width, or a file's acquired columns ``(W,)``."""
    grids = [torch.ones(g, dtype=torch.bool) if isinstance(g, int) else g for g in grids]
    return [acs_width(m & cols) for cf, acc in pairs for cols in grids for m in
            drawable_masks(create_mask_for_mask_type(mask_type, (cf,), (acc,)), cols.numel())]


def drawn_accelerations(mask_type: str, pairs, grids) -> list[float]:
    """The accelerations (acquirable / sampled columns, as ``mrirecon run`` counts them) of
    every mask that ``mask_type`` with the ``(centre fraction, acceleration)`` ``pairs`` draws
    (:func:`drawable_masks`) on each distinct file's acquired columns ``(W,)`` of ``grids``: the
    rates as drawn that a card's range holds beside the nominal ones (the supervised and the
    self-supervised sets)."""
    distinct = list({(c.numel(), tuple(c.tolist())): c for c in grids}.values())
    return [max(int(cols.sum()), 1) / max(int((m & cols).sum()), 1) for cf, acc in pairs
            for cols in distinct for m in
            drawable_masks(create_mask_for_mask_type(mask_type, (cf,), (acc,)), cols.numel())]


def acs_column_range(mask_type: str, pairs, widths) -> list[int]:
    """``[min, max]`` of :func:`drawn_bands` on ``widths`` columns: a card's ``acs_columns``."""
    bands = drawn_bands(mask_type, pairs, [int(w) for w in widths])
    return [min(bands), max(bands)]
