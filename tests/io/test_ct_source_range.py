"""CT images from packages (training sources and held-out) clipped to the documented HU range."""

import numpy as np
import pytest


def test_every_ct_source_is_clipped_to_the_hu_range():
    from mrirecon.io.ct_sources import HU_MAX, HU_MIN, load_ct_sources

    assert (HU_MIN, HU_MAX) == (-1024.0, 3071.0)
    slices = load_ct_sources()
    for s in slices:
        assert HU_MIN <= float(s.values.min()) and float(s.values.max()) <= HU_MAX, (s.name, s.frame)
    # the one source with padding outside the circle: that padding reads as air, not -2000 HU
    j2k = [s for s in slices if s.name.startswith("J2K_pixelrep_mismatch")]
    assert j2k and float(j2k[0].values.min()) == HU_MIN


def test_heldout_ct_is_the_dicoms_hu_clipped_to_the_documented_range():
    pydicom = pytest.importorskip("pydicom")
    from mrirecon.io.heldout_sources import HELDOUT_CT, _dicom_path, read_heldout_ct

    for name in HELDOUT_CT:
        try:
            path = _dicom_path(name)
        except FileNotFoundError:
            pytest.skip("pydicom-data not installed")
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(read_heldout_ct(name), np.clip(hu, -1024.0, 3071.0))
