"""Keywords of the training sets that were public and renamed: still accepted for one release
with a ``FutureWarning`` (:func:`mrirecon.core.names.accepts_deprecated_names`). Was: a raw
``TypeError: ... unexpected keyword argument 'cache_maps'``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from mrirecon.data.simulate_mri import simulate_mri_dataset
from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.maps_cache import MapsCache

MASK = MaskConfig(type="equispaced_fraction", center_fractions=(0.16,), accelerations=(4,))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deprecated") / "train"
    simulate_mri_dataset(root, volumes=1, slices=2, coils=2, size=(24, 24), seed=3)
    return root


@pytest.mark.parametrize("keep", [False, True])
def test_cache_maps_is_maps_cache_with_a_future_warning(folder, keep):
    """``cache_maps=False`` (kept no maps) is ``maps_cache=MapsCache(0)``; ``True`` (the old
    default) the default cache."""
    with pytest.warns(FutureWarning, match=r"MRITrainingSet.*'cache_maps' is deprecated, use "
                                           r"'maps_cache'"):
        old = MRITrainingSet(folder, MASK, "espirit", cache_maps=keep)
    new = MRITrainingSet(folder, MASK, "espirit",
                         maps_cache=None if keep else MapsCache(0))
    for i in range(len(new)):
        assert torch.equal(old.get(i, mask_seed=i).maps, new.get(i, mask_seed=i).maps)
    assert isinstance(old.maps_cache, MapsCache)
    assert len(old.maps_cache) == len(new.maps_cache) == (len(new) if keep else 0)
    assert "cache_maps" not in inspect.signature(MRITrainingSet).parameters


def test_cache_maps_and_maps_cache_together_are_refused(folder):
    with pytest.raises(ValueError, match="both 'cache_maps' .deprecated. and 'maps_cache'"):
        MRITrainingSet(folder, MASK, "espirit", cache_maps=False, maps_cache=MapsCache(0))
