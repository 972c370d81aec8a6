"""What a training set records and refuses at the edges: the card's acceleration and coil
ranges from the files, ``attrs/max`` at its tolerance's bounds, NaN bounds in a card's range."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MAX_ATTR_ABOVE, MRITrainingSet


def test_trained_card_range_is_the_drawn_rates_on_the_acquired_columns(tmp_path):
    """The card's accelerations are [min, max] of the nominal rate and the rates of every
    drawable mask on the *acquired* columns, and no wider: a range taken over the whole width
    (64 / sampled) widened it below the drawn rates without any test failing. Reference: the
    masks' offsets enumerated here, the acquired window sliced by hand."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.sampling import create_mask_for_mask_type
    from tests.robustness.test_hostile_mask_rates import PADDING, W, _pad

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=1, coils=2, size=(W, W), seed=1,
                                   resolution=2)
    _pad(Path(path))
    fn = create_mask_for_mask_type("equispaced_fraction", (0.08,), (4,))
    rates, offset = [4.0], 0
    while True:
        try:
            m = np.asarray(fn(W, seed=0, offset=offset)).astype(bool).reshape(-1)
        except ValueError:
            break
        rates.append((PADDING[1] - PADDING[0]) / max(int(m[PADDING[0]:PADDING[1]].sum()), 1))
        offset += 1
    assert offset > 1
    ts = MRITrainingSet(tmp_path, MaskConfig(type="equispaced_fraction", center_fractions=(0.08,),
                                             accelerations=(4,)))
    lo, hi = ts.training_range()["accelerations"]
    # the card rounds to 4 decimals: half a unit of the 4th decimal
    assert lo == pytest.approx(min(rates), abs=5e-5) and hi == pytest.approx(max(rates), abs=5e-5)


def test_the_card_coil_range_spans_every_training_files_coils(tmp_path):
    """Files of 2 and 4 coils: the card says coils [2, 4] (``[min, min]`` passed every test)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder = tmp_path / "train"
    folder.mkdir()
    for coils in (2, 4):
        (p,) = simulate_mri_dataset(tmp_path / f"c{coils}", volumes=1, slices=1, coils=coils,
                                    size=(32, 32), seed=coils)
        shutil.copy(p, folder / f"c{coils}_{Path(p).name}")
    ts = MRITrainingSet(folder, MaskConfig("equispaced_fraction", (0.25,), (2,)))
    assert ts.training_range()["coils"] == [2, 4]


def _one_file_folder(tmp_path, mri_file, factor):
    folder = tmp_path / "train"
    folder.mkdir()
    path = folder / mri_file.name
    shutil.copy(mri_file, path)
    with h5py.File(path, "r+") as h5:
        peak = h5["reconstruction_rss"][()].max()
        # factor None: one float32 ulp below the reference's peak (float rounding of the attribute)
        h5.attrs["max"] = (np.nextafter(np.float32(peak), np.float32(0)) if factor is None
                           else float(peak) * factor)
    return folder


@pytest.mark.parametrize("factor", [None, MAX_ATTR_ABOVE * (1 - 1e-3)])
def test_a_max_attribute_at_the_edges_of_its_tolerance_is_taken(factor, tmp_path, mri_file):
    """``max`` one float32 rounding step below the peak ("float rounding aside") and just under
    :data:`MAX_ATTR_ABOVE` times the peak are data ranges (a check that demanded ``max >=
    peak`` exactly passed every test)."""
    sample = MRITrainingSet(_one_file_folder(tmp_path, mri_file, factor),
                            MaskConfig("equispaced_fraction", (0.25,), (2,)), train=False).get(0)
    assert math.isfinite(float(sample.max_value)) and float(sample.max_value) > 0


@pytest.mark.parametrize("factor", [MAX_ATTR_ABOVE * (1 + 1e-3), 5.0])
def test_a_max_attribute_just_past_the_bound_is_refused(factor, tmp_path, mri_file):
    """Just above :data:`MAX_ATTR_ABOVE` times the peak (and 5x: the SSIM gradient keeps about
    a third of its size) is refused; only 1.5x and 1000x were tested, so a bound of 10 passed."""
    data = MRITrainingSet(_one_file_folder(tmp_path, mri_file, factor),
                          MaskConfig("equispaced_fraction", (0.25,), (2,)), train=False)
    with pytest.raises(ValueError, match=r"attrs/max: .*x the maximum"):
        data.get(0)


@pytest.mark.parametrize("rng", [{"coils": [float("nan"), 8]}, {"accelerations": [2, float("nan")]},
                                 {"matrix": {"min": [float("nan"), 32], "max": [64, 64]}}])
def test_a_nan_bound_in_a_cards_range_is_refused(rng):
    """A NaN bound compares False with everything, so the range warning would never fire: the
    card is refused when read."""
    from mrirecon.training.weights import check_training_range

    with pytest.raises(ValueError, match=r"c\.yaml: training_range.*\[min, max\] numbers"):
        check_training_range(rng, "c.yaml")
