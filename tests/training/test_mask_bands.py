"""The masks a training set can draw (:mod:`mrirecon.training.mask_bands`): every offset the mask
function accepts, so the card's acceleration and ACS ranges cover what training saw."""

from __future__ import annotations

import pytest
import torch

from mrirecon.sampling import create_mask_for_mask_type
from mrirecon.training.mask_bands import drawable_masks


@pytest.mark.parametrize("mask_type,width", [("equispaced_fraction", 32), ("equispaced_fraction", 37),
                                             ("magic_fraction", 32)])
def test_drawable_masks_are_every_offset_the_mask_function_accepts(mask_type, width):
    """Fails if mask_bands.py:24 offsets from 2, offset 1 skipped: the card's accelerations
    and acs_columns are computed over :func:`drawable_masks`, which must hold the mask of every
    offset the mask function draws in training (a missing offset narrows the card's range)."""
    fn = create_mask_for_mask_type(mask_type, (0.08,), (4,))
    got = {tuple(m.reshape(-1).tolist()) for m in drawable_masks(fn, width)}
    accepted = set()
    for offset in range(4 * width):
        try:
            accepted.add(tuple(torch.as_tensor(fn(width, seed=0, offset=offset)).reshape(-1).tolist()))
        except ValueError:
            break
    assert len(accepted) >= 2
    assert accepted <= got, f"{len(accepted - got)} offsets' masks missing"
