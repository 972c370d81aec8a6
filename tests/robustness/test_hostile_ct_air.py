"""A CT slice of air alone (a series' end slice, an air scan) with the noise of a real dose:
said once as an air scan, not judged by the checks made for a patient's data."""

from __future__ import annotations

import numpy as np
import pytest

from tests.robustness.test_hostile_inputs import _ct_warnings


@pytest.mark.parametrize("noise", [0.0, 0.0156, 0.032])  # noise-free, 4096 and 1000 photons
def test_an_air_slice_is_an_air_scan_not_a_patients_data_at_the_wrong_scale(ct_dir, tmp_path,
                                                                           noise):
    """Fails if a sinogram of air with photon noise is taken for a patient's data: its largest
    value alone was judged, so noise passed it, and the views' sums ("vary by 158 %:
    transposed?"), the image's scale ("a DICOM series not in HU?") and the method's bias
    ("+0 HU off the FBP's") were warned of; or if a noise-free one is no longer an air scan."""
    rng = np.random.default_rng(0)

    def air(data):  # air's chords (0.02 / m over up to ~0.26 m) and the dose's noise, stored
        # as LoDoPaB stores line integrals: / MU_MAX (81.35858, per m)
        s = np.linspace(-1, 1, data.shape[-1])
        chords = 0.005 * np.sqrt(np.clip(1 - s ** 2, 0, None))
        return ((chords + rng.normal(0.0, noise, data.shape)) / 81.35858).astype(data.dtype)

    warnings = _ct_warnings(ct_dir, tmp_path, f"air{noise}", air)
    assert any("an air scan, or a sinogram scaled down" in w for w in warnings), warnings
    for wrong in ("vary by", "not in HU", "transposed", "off the Hann FBP", "no part of the FBP"):
        assert not any(wrong in w for w in warnings), (wrong, warnings)
