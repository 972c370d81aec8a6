"""Hostile training data and settings: what `mrirecon train` reads must describe itself, or the
run stops naming the file and the field (a training that learns nothing, exit 0, is the failure
these guard against)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet

MASK = MaskConfig("equispaced_fraction", (0.25,), (2,))


def _folder(tmp_path, mri_file, edit=None):
    folder = tmp_path / "train"
    folder.mkdir()
    path = folder / mri_file.name
    shutil.copy(mri_file, path)
    if edit is not None:
        with h5py.File(path, "r+") as h5:
            edit(h5)
    return folder, path


def _peak(h5) -> float:
    return float(h5["reconstruction_rss"][()].max())


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_an_honest_max_attribute_is_the_loss_data_range(factor, tmp_path, mri_file):
    def edit(h5):
        h5.attrs["max"] = factor * _peak(h5)

    folder, path = _folder(tmp_path, mri_file, edit)
    with h5py.File(path) as h5:
        expected = float(h5.attrs["max"])
    sample = MRITrainingSet(folder, MASK, train=False).get(1)
    assert float(sample.max_value) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("value, message", [
    # SSIM's constants grow as max^2: at 1000x the loss was 3e-5 instead of 0.37 and its gradient
    # 1e-4 of its size, so nothing was learned, exit 0
    (lambda peak: 1000 * peak, r"attrs/max: .* is 1e\+03x the maximum .* of its reconstruction_rss"),
    (lambda peak: 0.5 * peak, r"attrs/max: .* is 0.5x the maximum"),
    # NaN: "cg: the right-hand side holds NaN" steps later (the weights had become NaN), no file
    (lambda peak: float("nan"), r"attrs/max: nan is no data range"),
    (lambda peak: -1.0, r"attrs/max: -1 is no data range"),
])
def test_a_max_attribute_that_does_not_describe_the_reference_is_refused(value, message, tmp_path,
                                                                         mri_file):
    def edit(h5):
        h5.attrs["max"] = value(_peak(h5))

    folder, path = _folder(tmp_path, mri_file, edit)
    data = MRITrainingSet(folder, MASK, train=True)
    with pytest.raises(ValueError, match=message) as err:
        data.get(0, mask_seed=0)
    assert str(path) in str(err.value)


def test_a_nan_training_reference_is_refused_naming_the_file_and_slice(tmp_path, mri_file):
    def edit(h5):
        ref = h5["reconstruction_rss"][()]
        ref[1, 3, 4] = np.nan
        h5["reconstruction_rss"][...] = ref

    folder, path = _folder(tmp_path, mri_file, edit)
    data = MRITrainingSet(folder, MASK, train=True)
    with pytest.raises(ValueError, match=r"reconstruction_rss: 1 NaN or Inf values \(slice\(s\) 1\)") as err:
        data.get(0, mask_seed=0)  # slice 0 is finite: the volume's reference is checked whole
    assert str(path) in str(err.value)
