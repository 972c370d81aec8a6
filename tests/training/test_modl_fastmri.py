"""The shipped ``modl_fastmri_diverse`` (MoDL at the fastMRI deployment geometry): card, scale-free
output, no intensity bias and a better image than the zero-filled one on a simulated slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from mrirecon.operators import sense
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

from tests.training.test_modl_deploy import COLS, ROWS, _Disc

NAME = "modl_fastmri_diverse"
pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / f"{NAME}.pt").is_file(), reason="weights not shipped")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_pretrained(NAME)


@pytest.fixture(scope="module", params=[8, 12])
def slice_(request):
    from mrirecon.training.deploy_mri import simulate_slice

    return simulate_slice(np.random.default_rng(11), _Disc(), 4, coils=request.param, rows=ROWS, cols=COLS)


def test_card_states_command_seed_data_geometry_and_failures():
    card = model_card(NAME)
    assert NAME in available_weights() and card["model"]["name"] == "modl"
    t = card["training"]
    assert "mrirecon train modl" in t["command"] and t["seed"] == 0
    assert t["wall_time_s"] <= 2 * 3600 and t["steps"] > 0
    assert {"natural", "procedural", "mni"} <= set(card["data"]["sources"])
    assert card["training_range"]["matrix"]["max"] == [640, 320]
    assert card["known_failures"] and card["full_geometry"] and card["normalisation"]
    assert (WEIGHTS_DIR / f"{NAME}.pt").stat().st_size < 1_000_000
    yaml.safe_load((WEIGHTS_DIR / f"{NAME}.yaml").read_text())


def _recon(model, y, sl):
    with torch.no_grad():
        return model(y[None], sense(sl["maps"][None], sl["mask"]))[0]


def test_same_image_when_kspace_is_scaled_by_1e3(model, slice_):
    y = slice_["kspace"] * 3.7  # arbitrary scanner units
    a, b = _recon(model, y, slice_), _recon(model, 1e3 * y, slice_)
    # normalisation by max |A^H y| makes the model positively homogeneous in exact arithmetic;
    # float32 rounding over 5 unrolls x 8 CG steps stays orders below the data's ~3 % noise
    assert float((b / 1e3 - a).abs().max()) <= 1e-3 * float(a.abs().max())


def test_no_intensity_bias_and_better_than_zero_filled(model, slice_):
    """For 8 and 12 coils alike: the normalisation does not depend on the coil count."""
    from mrirecon.functional import ifft2c

    ref = slice_["target"][32:96].numpy()
    x = _recon(model, slice_["kspace"], slice_).abs()[32:96].numpy()
    zf = ifft2c(slice_["kspace"]).abs().pow(2).sum(0).sqrt()[32:96].numpy()
    assert abs(x.mean() / ref.mean() - 1) < 0.05
    assert abs(np.percentile(x, 99) / np.percentile(ref, 99) - 1) < 0.05
    assert np.linalg.norm(x - ref) < 0.8 * np.linalg.norm(zf - ref)
