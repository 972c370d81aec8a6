"""``poisson_disc`` reaches a reachable acceleration for every seed, not only for most."""

from __future__ import annotations

import pytest
import torch

from mrirecon.sampling import poisson_disc
from mrirecon.sampling.nonuniform import calibration_region


@pytest.mark.parametrize("shape,calib,acc,seeds", [
    ((32, 32), (0, 0), 3.0, 40), ((32, 32), (0, 0), 5.75, 20),
    ((32, 32), (8, 8), 2.0, 20), ((32, 32), (8, 8), 4.0, 20), ((48, 40), (0, 0), 3.0, 10)])
def test_poisson_disc_reaches_the_acceleration_for_every_seed(shape, calib, acc, seeds):
    """For a fixed candidate order the sample count is not monotone in the slope, and one step
    of the centre ellipse adds a whole ring of points, so the bisections could step over every
    count within tol. Was: "cannot reach acceleration 3 within 2% on (32, 32) with calib
    (0, 0): the closest mask reaches 3.066" for seed 1 (seeds 0 and 2, and sigpy.mri.poisson
    with seed 1, reach it); 6 of 20 seeds refused at 2x with an 8 x 8 block."""
    block = torch.from_numpy(calibration_region(shape, calib))
    for seed in range(seeds):
        m = poisson_disc(shape, acc, calib, seed=seed)
        assert m.dtype == torch.bool and m.shape == shape
        # the default tol=0.02 is the function's contract
        assert abs(m.numel() / m.sum().item() - acc) / acc < 0.02, seed
        assert m[block].all(), seed


def test_a_mask_found_past_the_bisections_is_deterministic():
    # seed 1 at 3x on 32 x 32 needs the ring-by-ring search after the bisections
    assert torch.equal(poisson_disc((32, 32), 3.0, seed=1), poisson_disc((32, 32), 3.0, seed=1))


def test_poisson_disc_still_refuses_what_no_mask_reaches():
    # the largest slope leaves far more than 1024 / 500 points: every mask is too dense
    with pytest.raises(ValueError, match=r"poisson_disc: cannot reach acceleration 500 within 2% "
                                         r"on \(32, 32\) with calib \(0, 0\): the closest mask"):
        poisson_disc((32, 32), 500, seed=1)
