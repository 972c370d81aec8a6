"""One ACS-band rule (``sampling.acs``) for the pipeline's calibration/GRAPPA and E2E-VarNet."""

from __future__ import annotations

import torch

from mrirecon.sampling import EquispacedFractionMask, RandomMask, acs_bounds, acs_width


def _contiguous_run(mask: torch.Tensor) -> int:
    """Reference: walk outwards from the centre column (the pipeline's former helper)."""
    w, c = mask.numel(), mask.numel() // 2
    if not bool(mask[c]):
        return 0
    left, right = c, c
    while left > 0 and bool(mask[left - 1]):
        left -= 1
    while right < w - 1 and bool(mask[right + 1]):
        right += 1
    return right - left + 1


def _symmetric_run(mask: torch.Tensor) -> int:
    """Reference for fastMRI's rule, counting a run that reaches the edge in full."""
    w, c = mask.numel(), mask.numel() // 2
    left = next((i for i in range(c) if not bool(mask[c - 1 - i])), c)
    right = next((i for i in range(w - c) if not bool(mask[c + i])), w - c)
    return max(2 * min(left, right), 1)


def test_acs_bounds_against_walking_references():
    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(w, generator=g) < p for w in (15, 16, 33, 64) for p in (0.3, 0.7, 0.95)]
    for w, fraction, acc in ((368, 0.08, 4), (320, 0.04, 8), (33, 0.2, 2)):
        for cls in (RandomMask, EquispacedFractionMask):
            m, num_low = cls([fraction], [acc]).sample_vector(w, seed=3)
            masks.append(m.bool())
            # the mask functions' own band is inside the detected run
            assert acs_width(m.bool()) >= num_low
    masks += [torch.ones(16, dtype=torch.bool), torch.zeros(16, dtype=torch.bool)]
    for m in masks:
        assert acs_width(m) == _contiguous_run(m), m.int().tolist()
        start, stop = acs_bounds(m[None], symmetric=False)
        if acs_width(m):
            assert bool(m[int(start):int(stop)].all())
        start, stop = acs_bounds(m[None])
        assert int(stop - start) == _symmetric_run(m), m.int().tolist()


def test_fully_sampled_mask_is_one_band_of_all_columns():
    # fastMRI's argmin-based rule gives 1 column here (sensitivities from a single line)
    full = torch.ones(2, 16, dtype=torch.bool)
    start, stop = acs_bounds(full)
    assert start.tolist() == [0, 0] and stop.tolist() == [16, 16]
    assert acs_width(full[0]) == 16


def test_given_band_width_wins():
    cols = torch.zeros(2, 16, dtype=torch.bool)
    start, stop = acs_bounds(cols, 6)
    assert start.tolist() == [5, 5] and (stop - start).tolist() == [6, 6]


def test_acs_width_is_zero_when_the_centre_column_is_not_sampled():
    """Fails if acs.py:50 dropped: a run left of an unsampled centre is no ACS band."""
    w = 16
    mask = torch.zeros(w, dtype=torch.bool)
    mask[4:8] = True  # sampled up to, not including, the centre column 8
    assert acs_width(mask) == 0
    start, stop = acs_bounds(mask[None], symmetric=False)
    assert int(stop[0] - start[0]) == 0
    mask[8] = True  # now the run reaches through the centre: [4, 9)
    start, stop = acs_bounds(mask[None], symmetric=False)
    assert (int(start[0]), int(stop[0])) == (4, 9)
