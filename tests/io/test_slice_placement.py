"""One home for the slice-placement tolerances of the ISMRMRD and DICOM readers."""

from __future__ import annotations

import numpy as np

from mrirecon.io import dicom_read, ismrmrd_placement, slice_placement


def test_both_readers_use_the_shared_tolerances():
    for name in ("ORIENTATION_TOL", "NORMAL_ANGLE_TOL", "POSITION_TOL_MM", "position_tolerance"):
        assert getattr(ismrmrd_placement, name) is getattr(slice_placement, name)
        assert getattr(dicom_read, name) is getattr(slice_placement, name)
    assert slice_placement.ORIENTATION_TOL == 1e-4 and slice_placement.POSITION_TOL_MM == 1e-3
    assert slice_placement.NORMAL_ANGLE_TOL == 3 * np.sqrt(3) * 5e-4


def test_position_tolerance_is_the_formula_both_readers_wrote_out():
    """``min(max(1e-3 mm, 1e-3 * spacing, 2 sqrt(3) q), spacing / 4)``, bit for bit, over
    spacings from 0.001 to 100 mm and position quanta from float32 rounding to 0.01 mm."""
    for spacing in (1e-3, 0.003, 0.5, 1.0, 2.5, 5.0, 33.3, 100.0):
        for quantum in (0.0, 1e-6, 2.0 ** -23 * 250, 1e-5 * 300, 0.01):
            old = min(max(1e-3, 1e-3 * spacing, 2 * np.sqrt(3) * quantum), spacing / 4)
            assert slice_placement.position_tolerance(spacing, quantum) == old
