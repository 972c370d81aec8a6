"""ISMRMRD acquisitions that hold no samples, and noise scans too short to whiten with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import fastmri_to_ismrmrd


def test_a_sample_free_end_marker_is_not_read_as_a_readout(tmp_path):
    """Fails if a sample-free acquisition (``ismrmrd.Acquisition()`` flagged
    ACQ_LAST_IN_MEASUREMENT, as a converter may end a measurement) changes what is read or
    refuses the file: its zero read_dir was refused as "readouts turned from one to the next"."""
    ismrmrd = pytest.importorskip("ismrmrd")
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io.ismrmrd_raw import read_ismrmrd

    made = tmp_path / "made"
    simulate_mri_dataset(made, volumes=1, slices=1, coils=3, size=(32, 24), seed=2, resolution=2)
    plain, marked = tmp_path / "plain.h5", tmp_path / "marked.h5"
    src = next(made.glob("*.h5"))
    fastmri_to_ismrmrd(src, plain)
    fastmri_to_ismrmrd(src, marked)
    end = ismrmrd.Acquisition()
    end.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    with ismrmrd.Dataset(str(marked), "dataset", create_if_needed=False) as ds:
        ds.append_acquisition(end)
    want, got = read_ismrmrd(plain), read_ismrmrd(marked)
    assert torch.equal(got.data, want.data) and got.data.abs().amax() > 0
    assert (got.mask is None and want.mask is None) or torch.equal(got.mask, want.mask)


@pytest.mark.parametrize("samples", [0, 1])
def test_a_noise_scan_of_fewer_than_two_samples_names_the_scan_and_the_remedy(samples):
    """Fails if a noise scan of 0 or 1 samples per coil fails with noise_covariance's bare
    "need at least 2 noise samples" instead of naming the noise scan and the switch that
    reconstructs without prewhitening (as a scan shorter than the coil count does)."""
    from mrirecon.calib import prewhiten

    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
    noise = torch.randn(3, samples, dtype=torch.complex64, generator=g)
    with pytest.raises(ValueError, match=rf"prewhiten: the noise scan holds {samples} sample\(s\) "
                                         r"per coil for 3 coils.*preprocess.prewhiten=false"):
        prewhiten(kspace, noise=noise)
    assert np.isfinite(prewhiten(kspace, noise=torch.randn(3, 64, dtype=torch.complex64,
                                                          generator=g)).numpy()).all()
