"""MRI training files whose readout-oversampled k-space was made as fftshift(fft2(image))
without the ifftshift (the image rolled by half the field of view): ``MRITrainingSet`` refuses
them by the rule ``mrirecon run`` warns by (:mod:`mrirecon.training.readout_roll`). Was: built
with exit 0 and no word, the model taught to map the oversampled air the crop keeps to the
reference (no roll of the reference matches the cropped image, so its checks could not tell)."""

from __future__ import annotations

import pytest

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet
from tests.helpers import clone_h5, read_kspace
from tests.pipeline.test_readout_roll import _sign, _volume


@pytest.mark.parametrize("both", [False, True])
def test_a_rolled_training_file_is_refused_naming_the_file(tmp_path, both):
    volume = _volume(tmp_path / "sim", coils=4)
    MRITrainingSet(volume.parent, MaskConfig(), "learned")  # the file as simulated: accepted
    (tmp_path / "rolled").mkdir()
    rolled = clone_h5(volume, tmp_path / "rolled" / "x.h5",
                      kspace=_sign(read_kspace(volume), both))
    with pytest.raises(ValueError, match=r"x\.h5: slice \d: kspace: \d+ % of the image energy "
                                         r"lies outside the readout crop") as err:
        MRITrainingSet(rolled.parent, MaskConfig(), "learned")
    assert "correct the k-space, or remove the file" in str(err.value)
