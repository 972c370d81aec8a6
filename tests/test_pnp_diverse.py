"""The shipped generic prior ``pnp_dncnn_diverse``: card, scale-free output, CT view count,
denoising, pipelines and training-range warnings."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from mrirecon.models.pnp.dpir import PnPDPIR
from mrirecon.operators import ct_operator
from mrirecon.operators.ct import projector_norm
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.mri import sense
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

NAME = "pnp_dncnn_diverse"
pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / f"{NAME}.pt").is_file(), reason="weights not shipped")


@pytest.fixture(scope="module")
def model() -> PnPDPIR:
    torch.set_num_threads(1)
    return load_pretrained(NAME)


def _phantom(n: int) -> torch.Tensor:
    from mrirecon.data.anatomy import shepp_logan

    return torch.as_tensor(shepp_logan((n, n)), dtype=torch.float64).clamp_min(0)


def test_card_states_command_seed_data_range_and_failures():
    card = model_card(NAME)
    assert NAME in available_weights() and card["model"]["name"] == "pnp_dpir"
    t = card["training"]
    assert "mrirecon train prior" in t["command"] and t["seed"] == 0
    assert t["wall_time_s"] <= 2 * 3600
    assert {"natural", "procedural", "mni", "ct"} <= set(card["data"]["sources"])
    assert {"matrix", "coils", "accelerations", "views"} <= set(card["training_range"])
    assert card["known_failures"]
    assert (WEIGHTS_DIR / f"{NAME}.pt").stat().st_size < 4_000_000
    yaml.safe_load((WEIGHTS_DIR / f"{NAME}.yaml").read_text())


def test_mri_same_image_when_kspace_is_scaled_by_1e3(model):
    n, coils = 64, 4
    x = _phantom(n).to(torch.complex64)[None]
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(1, coils, n, n, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::4] = True
    mask[n // 2 - 4:n // 2 + 4] = True
    op = sense(maps, mask)
    y = op(x)
    y = y + 0.01 * torch.randn(y.shape, dtype=y.dtype, generator=g) * mask
    with torch.no_grad():
        a, b = model(y, op), model(1e3 * y, op)
    # positively homogeneous in exact arithmetic; float32 rounding over the iterations stays
    # orders below the 1 % noise in the data
    assert (b / 1e3 - a).abs().max() <= 1e-3 * a.abs().max()


def test_ct_same_image_with_twice_the_views_and_no_intensity_bias(model):
    n = 64
    x = _phantom(n)
    outs = []
    for views in (30, 60):
        geom = CTGeometry.parallel((n, n), num_views=views)
        op = ct_operator(geom)
        norm = projector_norm(geom)
        y = op(x[None])
        with torch.no_grad():
            outs.append(model(y.float() / norm, op * (1.0 / norm))[0].double())
    a, b = outs
    for img in (a, b):  # mean and 99th percentile within 5 % of the reference's
        assert abs(float(img.mean() / x.mean()) - 1) < 0.05
        assert abs(float(torch.quantile(img.flatten(), 0.99) / torch.quantile(x.flatten(), 0.99)) - 1) < 0.05
    assert float((a - b).norm() / b.norm()) < 0.15


def test_denoiser_removes_most_of_the_noise(model):
    x = _phantom(64).to(torch.complex64)
    g = torch.Generator().manual_seed(5)
    sigma = 0.05
    noisy = x + sigma * math.sqrt(2) * torch.randn(x.shape, dtype=torch.complex64, generator=g)
    with torch.no_grad():
        out = model.denoiser(noisy, sigma)
    assert float((out - x).norm()) < 0.5 * float((noisy - x).norm())
