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


def _rewritten(tmp_path, change) -> tuple:
    """An ISMRMRD file of a simulated 32 x 24 slice (2 coils) whose acquisitions ``change``
    edits in place before they are written: ``(path, what change returned)``."""
    ismrmrd = pytest.importorskip("ismrmrd")
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    made = tmp_path / "made"
    simulate_mri_dataset(made, volumes=1, slices=1, coils=2, size=(32, 24), seed=2, resolution=2)
    plain, bad = tmp_path / "plain.h5", tmp_path / "bad.h5"
    fastmri_to_ismrmrd(next(made.glob("*.h5")), plain)
    with ismrmrd.Dataset(str(plain), "dataset", create_if_needed=False) as ds:
        xml = ds.read_xml_header()
        acqs = [ds.read_acquisition(i) for i in range(ds.number_of_acquisitions())]
    said = change(acqs)
    with ismrmrd.Dataset(str(bad), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for acq in acqs:
            ds.append_acquisition(acq)
    return bad, said


def test_a_line_whose_discards_leave_no_sample_is_refused_naming_the_field(tmp_path):
    """Fails if a Cartesian line whose discard_pre + discard_post cover all its samples is read
    (it was both "treated as unsampled" and "reconstructed as measured zeros", in two warnings)
    instead of refused naming the acquisition and the field, as the non-Cartesian reader does."""
    from mrirecon.io.errors import DataFormatError
    from mrirecon.io.ismrmrd_raw import read_ismrmrd

    def discard_all(acqs):
        acqs[3].discard_pre, acqs[3].discard_post = 20, 12  # of 32 samples

    bad, _ = _rewritten(tmp_path, discard_all)
    with pytest.raises(DataFormatError, match=r"data\[3\]\.head\.discard_pre: discard_pre 20 \+ "
                                              r"discard_post 12 leave no sample of the 32 stored"):
        read_ismrmrd(bad)


def test_a_readout_without_its_samples_is_refused_naming_it(tmp_path):
    """Fails if an imaging acquisition with a direction but 0 samples (a readout lost in a
    conversion) is skipped as a marker, or refused as a missing readout ("slice 0 has no
    readout 5", of a file that holds it), instead of named with its field."""
    from mrirecon.io.errors import DataFormatError
    from mrirecon.io.ismrmrd_raw import read_ismrmrd

    def lose_samples(acqs):
        acqs[4].resize(0, acqs[4].active_channels)
        return acqs[4].idx.kspace_encode_step_1

    bad, line = _rewritten(tmp_path, lose_samples)
    with pytest.raises(DataFormatError, match=rf"data\[4\]\.head\.number_of_samples: 0 samples: "
                                              rf"1 imaging acquisition\(s\) hold no data \(first: "
                                              rf"idx\.kspace_encode_step_1 {line}, slice 0\)"):
        read_ismrmrd(bad)
