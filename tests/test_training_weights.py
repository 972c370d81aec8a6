"""Shipped weights: size, model cards, safe loading, and that they beat zero-filled on new data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.validation import evaluate_reconstructor, model_reconstructor, zero_filled
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

SHIPPED = ("varnet_brain_sim", "modl_brain_sim")
REPO = Path(__file__).resolve().parents[1]


def test_shipped_weights_present():
    assert set(SHIPPED) <= set(available_weights())


@pytest.mark.parametrize("name", SHIPPED)
def test_card_and_size(name):
    pt = WEIGHTS_DIR / f"{name}.pt"
    assert pt.stat().st_size < 5 * 2**20
    card = model_card(name)
    assert {"model", "data", "training", "metrics_held_out"} <= set(card)
    t = card["training"]
    assert t["steps"] > 0 and t["wall_time_s"] > 0
    # the config in the repository reproduces the card's run (same data, model, optimiser)
    config = yaml.safe_load((REPO / t["config_file"]).read_text())
    assert config["model"] == card["model"] == t["config"]["model"]
    assert config["optim"]["max_steps"] == t["steps"]
    for key in ("lr", "batch_size", "lr_step", "lr_gamma"):
        assert config["optim"][key] == t["config"]["optim"][key]
    assert config["data"]["mask"] == t["config"]["data"]["mask"]
    for acc in ("4x", "8x"):
        m = card["metrics_held_out"][acc]
        assert m["model"]["SSIM"] > m["zero_filled"]["SSIM"]
    state = torch.load(pt, weights_only=True)  # a plain state_dict, no pickled code
    assert all(isinstance(v, torch.Tensor) for v in state.values())


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("held_out")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=5, size=(128, 128), seed=977)
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_beats_zero_filled_on_new_volume(name, held_out):
    model = load_pretrained(name)
    assert not model.training
    card = model_card(name)
    mask = card["training"]["config"]["data"]["mask"]
    ds = MRITrainingSet(
        held_out,
        MaskConfig(
            type=mask["type"],
            center_fractions=(mask["center_fractions"][0],),
            accelerations=(mask["accelerations"][0],),
        ),
        maps=card["training"]["config"]["data"]["maps"],
        train=False,
    )
    with torch.no_grad():
        learned = evaluate_reconstructor(model_reconstructor(model), ds).mean()
    baseline = evaluate_reconstructor(zero_filled, ds).mean()
    assert learned["SSIM"] > baseline["SSIM"] and learned["NMSE"] < baseline["NMSE"]


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights named 'nonexistent'.*shipped"):
        load_pretrained("nonexistent")
    pt = tmp_path / "m.pt"
    torch.save({"weight": torch.zeros(2)}, pt)
    with pytest.raises(FileNotFoundError, match=r"model card .*m\.yaml is missing"):
        load_pretrained(pt)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"params": {}}}))
    with pytest.raises(ValueError, match=r"m\.yaml: 'model\.name' is required"):
        load_pretrained(pt)
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump({"model": {"name": "dncnn", "params": {"depth": 3}}})
    )
    with pytest.raises(ValueError, match=r"m\.pt does not match dncnn: missing keys"):
        load_pretrained(pt)
    torch.save({"x": torch.nn.Linear(2, 2)}, pt)  # a pickled module: refused
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_pretrained(pt)
