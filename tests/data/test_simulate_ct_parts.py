"""``mrirecon simulate ct --part test`` beside a training part of the same seed wrote an exact
copy of it (the part only names the files) without a word: warned, naming the file and the seed
(not refused: a dose study wants the same images in its parts)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mrirecon.data.simulate_ct import simulate_ct_dataset

KW = {"samples": 2, "size": 16, "views": 8, "photons": 4096.0, "sources": "phantom"}


def _truth(path):
    with h5py.File(path) as h5:
        return np.asarray(h5["data"])


def test_a_part_of_the_seed_of_another_part_in_its_folder_is_warned_of(tmp_path, recwarn):
    simulate_ct_dataset(tmp_path, seed=3, part="train", **KW)
    with pytest.warns(UserWarning, match=r"observation_train_000\.hdf5 is part 'train' simulated "
                                         r"with seed 3: part 'test' of the same seed holds the "
                                         r"same images"):
        simulate_ct_dataset(tmp_path, seed=3, part="test", **KW)
    np.testing.assert_array_equal(_truth(tmp_path / "ground_truth_train_000.hdf5"),
                                  _truth(tmp_path / "ground_truth_test_000.hdf5"))
    simulate_ct_dataset(tmp_path, seed=3, part="train", **KW)  # the same part again: replaced
    recwarn.clear()
    simulate_ct_dataset(tmp_path, seed=4, part="test", **KW)  # its own seed: other images
    assert not [w for w in recwarn if "same images" in str(w.message)]
    assert not np.array_equal(_truth(tmp_path / "ground_truth_train_000.hdf5"),
                              _truth(tmp_path / "ground_truth_test_000.hdf5"))
    # what the refusal prevents: the same seed in another folder is the same images
    simulate_ct_dataset(tmp_path / "elsewhere", seed=3, part="test", **KW)
    np.testing.assert_array_equal(_truth(tmp_path / "ground_truth_train_000.hdf5"),
                                  _truth(tmp_path / "elsewhere" / "ground_truth_test_000.hdf5"))


def test_the_same_part_again_is_not_warned_of(tmp_path, recwarn):
    simulate_ct_dataset(tmp_path, seed=3, part="train", **KW)
    simulate_ct_dataset(tmp_path, seed=3, part="train", **KW)  # a rerun replaces itself
    assert not [w for w in recwarn if "same images" in str(w.message)]
