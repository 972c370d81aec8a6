"""What the MRI and CT training sets draw and record: validation masks seeded by the file name,
the reference-check slices, the card's ranges per field, every view offset of a CT set."""

from __future__ import annotations

import pytest
import torch


def test_a_validation_set_ignores_a_given_mask_seed_and_seeds_by_the_file_name(tmp_path):
    """Fails if data.py:284 ``mask_seed if self.train`` -> ``mask_seed if mask_seed is not
    None``: the documented contract of ``MRITrainingSet.get`` -- validation (``train=False``)
    ignores ``mask_seed`` and draws fastMRI's mask from the file name, so every slice and
    every caller scores on the same mask."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.sampling import file_seed
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=2, coils=2, size=(32, 32), seed=1,
                                   resolution=2)
    cfg = MaskConfig(type="random", center_fractions=[0.16], accelerations=[4])
    val = MRITrainingSet(tmp_path, cfg, train=False)
    want = val.mask_fn(32, seed=file_seed(path.name))
    want = torch.as_tensor(want[0] if isinstance(want, tuple) else want).reshape(-1).bool()
    for seed in (None, 0, 12345):
        for i in range(len(val)):
            got = val.get(i, mask_seed=seed).mask.reshape(-1).bool()
            assert torch.equal(got, want), (seed, i)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 35])
def test_checked_slices_are_placed_symmetrically_inside_the_volume(n):
    """Fails if data.py:442 ``n - 1 - n // 4`` -> ``n - n // 4``: the reference-layout check
    reads two slices placed symmetrically (a reversed reference swaps them), both inside the
    volume; blank ones are skipped for the middle live slice."""
    from mrirecon.training.data import checked_slices

    got = checked_slices(n, set())
    assert got and all(0 <= i < n for i in got)
    assert got[0] + got[-1] == n - 1
    assert got == sorted({n // 4, n - 1 - n // 4})
    if n >= 3:  # all but the middle blank: the middle live one... or the pair minus blanks
        blank = set(range(n)) - {n // 2}
        assert checked_slices(n, blank) == [n // 2]


def test_a_cards_mri_training_range_spans_each_field_of_the_files():
    """Fails if data.py:49 readout_oversampling ``[min, max]`` -> ``[min, min]``: every
    interval of the card's ``training_range`` is ``[min, max]`` of its own inputs (a narrower
    range makes ``mrirecon run`` warn on data the model was trained on; a wider one hides data
    it never saw)."""
    from mrirecon.training.data import mri_training_range

    out = mri_training_range(matrices=[(64, 48), (80, 40), (72, 56)], coils=[4, 8, 2],
                             accelerations=[4.0, 3.5556, 8.0], ratios=[2.0, 1.0, 1.5],
                             maps="espirit", bands=[3, 7, 5])
    assert out["matrix"] == {"min": [64, 40], "max": [80, 56]}
    assert out["coils"] == [2, 8]
    assert out["accelerations"] == [3.5556, 8.0]
    assert out["readout_oversampling"] == [1.0, 2.0]
    assert out["acs_columns"] == [3, 7]
    assert out["maps"] == ["espirit"] and out["maps_crop"] == [0.0, 0.0]


def test_ct_training_draws_every_view_offset_and_validation_uses_offset_0(tmp_path):
    """Fails if data_ct.py:239 ``randint(self.factor)`` -> ``randint(factor - 1)``: sparse-view
    training draws each of the ``factor`` offsets (the card's ``views`` range is over every
    offset, :meth:`CTTrainingSet.training_range`), validation always offset 0. 64 seeds miss one
    of 4 equally likely offsets with probability 4 (3/4)^64 ~ 4e-8."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.training.data_ct import CTTrainingSet

    simulate_ct_dataset(tmp_path / "train", seed=3, part="train", samples=1, geometry="parallel",
                        views=48, size=32, sources="phantom", photons=None)
    full = None
    train = CTTrainingSet(tmp_path / "train", views=12, train=True)
    val = CTTrainingSet(tmp_path / "train", views=12, train=False)
    full = train.files.geometry.angles
    step = float(full[1] - full[0])
    offsets = set()
    for seed in range(64):
        first = float(train.get(0, mask_seed=seed).geometry.angles[0] - full[0])
        offsets.add(round(first / step))
    assert offsets == set(range(4)), offsets
    for _ in range(2):
        assert float(val.get(0).geometry.angles[0]) == float(full[0])


def test_ct_cards_view_range_spans_every_offset_training_draws(tmp_path):
    """Fails if data_ct.py:213 views over ``range(1)``, offset 0 only: on 50 views kept every
    4th, offsets 0 and 1 keep 13 views and offsets 2 and 3 keep 12; training draws all four, so
    the card's ``views`` must be [12, 13] (a card of [13, 13] makes ``mrirecon run`` warn on 12
    views the model trained on). Reference: the kept counts of ``range(o, 50, 4)``."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.training.data_ct import CTTrainingSet

    simulate_ct_dataset(tmp_path / "train", seed=3, part="train", samples=1, geometry="parallel",
                        views=50, size=32, sources="phantom", photons=None)
    s = CTTrainingSet(tmp_path / "train", views=13, train=True)
    assert s.factor == 4
    counts = [len(range(o, 50, 4)) for o in range(4)]
    assert s.training_range()["views"] == [min(counts), max(counts)] == [12, 13]
    drawn = {int(s.get(0, mask_seed=seed).y.shape[-2]) for seed in range(32)}
    assert drawn == {12, 13}
