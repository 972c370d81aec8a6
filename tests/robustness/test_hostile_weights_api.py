"""Loaded weights used from a notebook: fine-tuned and saved with the package's writer, called
with an operator of another precision, pickled whole, a bare state dict under a shipped name, a
home-relative path (docs/robustness.md)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from mrirecon.io.atomic import file_sha256
from mrirecon.io.weights import write_weights
from mrirecon.models import build_model
from mrirecon.operators import sense
from mrirecon.pipeline import adapt_stage
from mrirecon.training.run import save_model
from mrirecon.training.weights import INHERITED_CARD_KEYS, load_model, load_pretrained, model_card

#: A MoDL that builds and runs in milliseconds.
TINY = {"iterations": 2, "layers": 3, "features": 4, "cg_iterations": 3}
RANGE = {"matrix": {"min": [128, 128], "max": [128, 128]}, "coils": [4, 8]}


def tiny_weights(path, **extra):
    card = {"model": {"name": "modl", "params": dict(TINY)}, **extra}
    return write_weights(path, build_model("modl", **TINY).state_dict(), card)


def data(dtype=torch.complex64, maps_dtype=torch.complex64):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, 2, 8, 8, dtype=torch.complex128, generator=g).to(maps_dtype)
    op = sense(maps, torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool))
    y = op(torch.randn(1, 8, 8, dtype=maps_dtype, generator=g)).to(dtype)
    return y, op


def test_save_model_of_a_loaded_model_keeps_its_card_protections(tmp_path):
    """save_model wrote `model: {name, params}` only: the fine-tuned weights lost the training
    range (no "outside the modl training range" warning), the known failures and overridable."""
    assert adapt_stage.INHERITED is INHERITED_CARD_KEYS  # one list, not two
    pt = tiny_weights(tmp_path / "base.pt", training_range=RANGE, known_failures=["tiny only"],
                      overridable=["iterations"], metrics_held_out={"PSNR": 30.0})
    model = load_pretrained(pt)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # "fine-tuned"
    ft = save_model(model, tmp_path / "ft.pt", "modl", dict(TINY))
    card = model_card(ft)
    assert card["training_range"] == RANGE and card["known_failures"] == ["tiny only"]
    assert card["overridable"] == ["iterations"] and "metrics_held_out" not in card
    assert card["fine_tuned_from"] == {"path": str(pt), "sha256": file_sha256(pt)}
    again = load_pretrained(ft)
    assert again.model_card["training_range"] == RANGE
    twice = model_card(save_model(again, tmp_path / "ft2.pt", "modl", dict(TINY),
                                  {"known_failures": ["mine"]}))  # extra wins
    assert twice["known_failures"] == ["mine"] and twice["training_range"] == RANGE
    assert twice["fine_tuned_from"] == {"path": str(ft), "sha256": file_sha256(ft),
                                        "fine_tuned_from": card["fine_tuned_from"]}
    shipped = model_card(save_model(load_pretrained("modl_brain_sim"), tmp_path / "s.pt", "modl",
                                    model_card("modl_brain_sim")["model"]["params"]))
    assert shipped["fine_tuned_from"]["name"] == "modl_brain_sim"
    assert shipped["training_range"] == model_card("modl_brain_sim")["training_range"]
    fresh = model_card(save_model(build_model("modl", **TINY), tmp_path / "n.pt", "modl", TINY))
    assert set(fresh) == {"model"}  # a built model carries no card


def test_an_operator_wider_than_the_weights_is_refused_naming_both_dtypes(tmp_path):
    """complex64 k-space with complex128 coil maps (from NumPy) failed inside the first
    convolution: "Input type (double) and bias type (float) should be the same"."""
    model = load_pretrained(tiny_weights(tmp_path / "m.pt"))
    y, op = data(torch.complex64, torch.complex128)
    with pytest.raises(TypeError, match=r"m\.pt: the operator SenseOperator holds maps as "
                                        r"torch\.complex128 but the weights are torch\.float32.*"
                                        r"op\.to\(torch\.complex64\).*maps\.to\(torch\.complex64\)"):
        with torch.no_grad():
            model(y, op)
    with torch.no_grad():
        assert model(*data()).dtype == torch.complex64  # matching precision runs
        # narrower maps under double weights are promoted by the operator and run
        assert model.to(torch.float64)(*data(torch.complex128)).dtype == torch.complex128


def test_a_loaded_model_pickles_whole_and_keeps_its_guard(tmp_path):
    """torch.save(model) and spawn workers failed: "Can't pickle local object
    '_guard_modality.<locals>.check'"."""
    model = load_pretrained(tiny_weights(tmp_path / "m.pt"))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    pickle.loads(pickle.dumps(model))
    y, op = data()
    with torch.no_grad():
        assert torch.equal(back(y, op), model(y, op))
    with pytest.raises(TypeError, match=r"m\.pt: the data y must be a torch\.Tensor"):
        back(y.numpy(), op)
    with pytest.raises(TypeError, match=r"the data are torch\.complex128 but the weights"):
        back(y.to(torch.complex128), op)


def test_a_bare_state_dict_under_a_shipped_name_builds_that_cards_model(tmp_path):
    """load_model("modl_brain_sim", {}, "ft_sd.pt") raised "KeyError: unknown model
    'modl_brain_sim'"."""
    shipped = load_pretrained("modl_brain_sim")
    pt = tmp_path / "ft_sd.pt"
    torch.save(shipped.state_dict(), pt)
    model = load_model("modl_brain_sim", {}, pt)
    assert type(model) is type(shipped)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 shipped.state_dict().values()))
    with pytest.raises(ValueError, match=r"parameters \['features'\] given.*shipped "
                                         r"modl_brain_sim card.*load_model\('modl'"):
        load_model("modl_brain_sim", {"features": 8}, pt)


def test_a_home_relative_weights_path_is_expanded(tmp_path, monkeypatch):
    """load_pretrained("~/x.pt") looked for a folder named "~" in the working directory."""
    home = tmp_path / "home"
    tiny_weights(home / "x.pt")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert load_pretrained("~/x.pt").iterations == TINY["iterations"]
    assert load_model("modl", {}, "~/x.pt").iterations == TINY["iterations"]
