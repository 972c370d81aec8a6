"""The typed containers (:mod:`mrirecon.containers`): defaults a writer relies on."""

from __future__ import annotations


def test_slice_thickness_defaults_to_the_slice_spacing():
    """Fails if the default taken
    from ``spacing[2]``, the column spacing: with anisotropic voxels the DICOM SliceThickness
    would be the in-plane spacing. Existing tests use spacings whose entries agree."""
    from mrirecon.containers import ImageGeometry

    assert ImageGeometry(spacing=(3.0, 0.5, 0.7)).slice_thickness == 3.0
    assert ImageGeometry(spacing=(3.0, 0.5, 0.7), slice_thickness=2.0).slice_thickness == 2.0
