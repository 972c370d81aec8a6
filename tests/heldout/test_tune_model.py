"""``heldout.tune.tune_ct`` with a model: without ``model_settings`` it scores the model once as
it is (it raised "TypeError: 'NoneType' object is not iterable"); the attributes a setting
overrides are put back afterwards (the model was left at the last setting tried)."""

from __future__ import annotations

import pytest
import torch

from mrirecon.data.simulate_ct import ct_simulation_geometry, simulate_ct_samples
from mrirecon.heldout.data import HeldoutCTSlice
from mrirecon.heldout.tune import _attributes_kept, tune_ct
from mrirecon.io.lodopab import MU_MAX_PER_MM


class ScaledBackprojection(torch.nn.Module):
    """A stand-in learned CT model: ``scale * A^T y / 100``."""

    scale = 1.0

    def forward(self, y, op):
        return self.scale * op.adjoint(y) / 100.0


def _slices():
    geom = ct_simulation_geometry("parallel", 32, 60, 49, 260.0)
    sim = simulate_ct_samples(1, geom, photons=4096, seed=3, min_count=0.1)
    return [HeldoutCTSlice("v", torch.from_numpy(sim.sinogram[0]).float(),
                           torch.from_numpy(sim.attenuation[0] / MU_MAX_PER_MM).float(), geom)]


@pytest.mark.filterwarnings("ignore:.*at the edge of the grid")  # a 3-point sweep's best is
def test_a_model_without_settings_is_scored_once_as_it_is_and_its_attributes_put_back():
    slices, model = _slices(), ScaledBackprojection()
    model.scale = 1.5
    once = tune_ct(slices, views=(30,), grid={}, model=model)[30]["model"]["grid"]
    swept = tune_ct(slices, views=(30,), grid={}, model=model,
                    model_settings=[{"scale": 3.0}, {}, {"scale": 1.5}])[30]["model"]["grid"]
    assert [g["params"] for g in once] == [{}]
    assert model.scale == 1.5  # put back after the sweep (was left at 1.5 by luck of order: 3.0
    # first, then {}, then 1.5; the second test puts a changed value back whatever the order)
    # {} after {"scale": 3.0} scores the model as the last setting left it (as the sweep runs);
    # the model as given is the {"scale": 1.5} point, which equals the single score
    assert swept[2]["PSNR"] == once[0]["PSNR"] and swept[2]["SSIM"] == once[0]["SSIM"]
    assert swept[0]["PSNR"] != once[0]["PSNR"]


def test_attributes_a_setting_adds_are_removed_and_changed_ones_restored():
    model = ScaledBackprojection()
    model.scale = 2.0
    with _attributes_kept(model, [{"scale": 5.0, "extra": 1}]):
        model.scale, model.extra = 5.0, 1
    assert model.scale == 2.0 and not hasattr(model, "extra")
    model.scale = 2.0
    try:
        with _attributes_kept(model, [{"scale": 7.0}]):
            model.scale = 7.0
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert model.scale == 2.0
