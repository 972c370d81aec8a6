"""Which reference slices the metrics leave out (``pipeline.volume.without_blank_reference_slices``)."""

from __future__ import annotations

import torch


def test_a_slice_zero_in_both_reference_and_reconstruction_is_kept():
    """Documented: a slice both zero (a noise-only slice whose coil maps were all zero) matches
    and is kept; only a zero reference slice under a non-zero reconstruction is left out."""
    from mrirecon.pipeline.volume import without_blank_reference_slices

    ref = torch.rand(4, 8, 8, dtype=torch.float64) + 0.1
    out = ref.clone()
    ref[1] = 0
    out[1] = 0  # both zero: kept
    ref[3] = 0  # reference zero, reconstruction not: dropped
    r, o, msg = without_blank_reference_slices(ref, out)
    assert r.shape[0] == o.shape[0] == 3
    assert torch.equal(r, ref[[0, 1, 2]]) and torch.equal(o, out[[0, 1, 2]])
    assert msg is not None and "slice 3 is" in msg and "other 3 of 4 slices" in msg
    ref2, out2 = ref.clone(), out.clone()
    ref2[3], out2[3] = 1.0, 1.0
    r, o, msg = without_blank_reference_slices(ref2, out2)  # only the both-zero slice is blank
    assert msg is None and r.shape[0] == 4
