"""What the research notebooks advise, and the library calls under them (audit a14, notebooks).

* Notebook 05 said a backbone swap is one line: ``ComplexImageCNN(NormUnet(...))`` in place of
  ``ComplexImageCNN(DnCNN(...))`` failed at the first forward with "Given groups=1, weight of
  size [8, 2, 3, 3], expected input[1, 4, 48, 48] to have 2 channels, but got 4 channels".
* SSDU training (notebook 07) warned "espirit_maps: kspace is fully sampled over a centred
  (24, 10) block only, smaller than calib_width (24, 11) ... pass calib_width=(24, 10)": the
  training set had passed the whole acquired run through the centre (a random column beside
  the band), an argument no training key sets.
* ``AcquiredMRISet`` recorded a padded file's acceleration as full width / sampled columns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import pytest
import torch


# ---- ComplexImageCNN and NormUnet --------------------------------------------------------------


def test_complex_image_cnn_refuses_normunet_and_says_how_to_use_it():
    from mrirecon.models.backbones import ComplexImageCNN, NormUnet

    with pytest.raises(TypeError, match=r"ComplexImageCNN: NormUnet takes complex \(B, C, H, W\) "
                                        r"images .*NormUnet\(\.\.\.\)\(x\.unsqueeze\(-3\)\)"
                                        r"\.squeeze\(-3\)"):
        ComplexImageCNN(NormUnet(chans=8, num_pools=2))
    # the wiring the message gives works on a batch of complex images
    x = torch.randn(2, 20, 24, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    out = NormUnet(chans=8, num_pools=2)(x.unsqueeze(-3)).squeeze(-3)
    assert out.shape == x.shape and out.dtype == x.dtype


# ---- AcquiredMRISet ---------------------------------------------------------------------------


def _simulated(folder: Path, size: int, coils: int) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=1, coils=coils, size=(size, size),
                                   seed=3)
    return Path(path)


def test_acquired_set_counts_a_padded_files_acceleration_over_its_acquirable_columns(tmp_path):
    from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
    from mrirecon.training.data_acquired import AcquiredMRISet

    path = _simulated(tmp_path, 32, 2)
    left, right = 3, 29  # 26 acquirable columns of 32 (fastMRI knee layout: zero padding)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[5, 9, 14, 15, 16, 17, 21, 25]] = True  # 8 sampled, all inside the acquired range
    with h5py.File(path, "r+") as f:
        header = parse_ismrmrd_header(f["ismrmrd_header"][()], str(path))
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = header_to_xml(header.with_(padding_left=left, padding_right=right)).encode()
        del f["reconstruction_rss"]  # a test-style file: k-space as acquired and its mask
        f["kspace"][...] = f["kspace"][...] * mask.numpy()
        f["mask"] = mask.numpy()
    ranges = AcquiredMRISet(path, maps="learned").training_range()
    # mrirecon run's rule (slice_mri.column_counts): acquirable / sampled, padding left out
    assert ranges["accelerations"] == [round(26 / 8, 4)] * 2  # was [4.0, 4.0]: 32 / 8


def test_acquired_set_calibrates_on_the_pipelines_columns_without_an_espirit_warning(tmp_path):
    from mrirecon.calib import centre_maps
    from mrirecon.io import read_fastmri, write_fastmri
    from mrirecon.training.data_acquired import AcquiredMRISet

    source = _simulated(tmp_path / "full", 64, 4)
    k = read_fastmri(source)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[27:37] = True  # fastMRI's centred 10-column band of 64 columns ...
    mask[26] = True  # ... and a random column beside it: the run through the centre is 26-36
    mask[[2, 6, 10, 14, 18, 22, 41, 45, 49, 53, 57, 61]] = True
    path = write_fastmri(tmp_path / "acquired" / source.name, k.data * mask, k.header,
                         mask=mask.numpy())
    data = AcquiredMRISet(path, maps="espirit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "... pass calib_width=(24, 10) to silence this"
        sample = data.get(0)
    # the maps of the centred 10-column block, the block the pipeline's calibrate stage takes
    block = torch.zeros(64, dtype=torch.bool)
    block[27:37] = True
    expected = centre_maps(sample.y[0], block, crop=0.0)
    assert torch.equal(sample.maps[0], expected.to(sample.maps.dtype))
