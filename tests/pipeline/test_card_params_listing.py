"""``--set reconstruct.params.*`` on a pipeline whose weights have a model card: the names listed
as valid (and suggested) are the card's ``overridable`` settings, so that following the
suggestion loads (audit a21, finding 1: the listing named every constructor parameter of the
model, and a listed one was then refused by the card when the model was loaded)."""

from __future__ import annotations

import re

import pytest

from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.training.weights import load_model, model_card


def _listed(message: str) -> list[str]:
    """The names after "valid: " (up to the parenthesis that says where they come from)."""
    text = message.split("valid: ", 1)[1].split(" (", 1)[0]
    return [] if text == "none" else text.split(", ")


def _suggested(message: str) -> str | None:
    found = re.search(r"did you mean '([^']+)'", message)
    return found.group(1) if found else None


@pytest.mark.parametrize("name", ["mri_modl_brain_sim", "mri_modl"])
def test_a_typo_lists_and_suggests_only_what_the_card_lets_a_run_change(name):
    config, _ = load_pipeline(name)
    allowed = set(model_card(config.reconstruct.weights).get("overridable") or ())
    with pytest.raises(ConfigError) as err:
        load_pipeline(name, ["reconstruct.params.iteratons=3"])
    assert err.value.key == "reconstruct.params.iteratons"
    listed, hint = _listed(err.value.message), _suggested(err.value.message)
    assert set(listed) == allowed, err.value.message  # was every constructor parameter of modl
    assert hint is None or hint in allowed, err.value.message
    assert config.reconstruct.weights in err.value.message  # names the card that decides
    for key in [*listed, *([hint] if hint else [])]:  # each one named loads, the model too
        value = model_card(config.reconstruct.weights)["model"]["params"].get(key, 3)
        ok, _ = load_pipeline(name, [f"reconstruct.params.{key}={value}"])
        rc = ok.reconstruct
        assert load_model(rc.method, rc.params, rc.weights) is not None


def test_the_modl_brain_sim_card_lists_none_and_mri_modl_suggests_iterations():
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_modl_brain_sim", ["reconstruct.params.iteratons=3"])
    assert _listed(err.value.message) == [] and _suggested(err.value.message) is None
    assert "valid: none" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_modl", ["reconstruct.params.iteratons=3"])
    assert _listed(err.value.message) == ["iterations"]
    assert _suggested(err.value.message) == "iterations"


def test_a_parameter_the_card_fixes_is_refused_at_load_naming_the_key():
    """``iterations`` is a parameter of MoDL, but the card of modl_brain_sim fixes it: refused
    when the pipeline is loaded, naming the key (was: after the inputs were listed, by the model
    loader, naming no key)."""
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_modl_brain_sim", ["reconstruct.params.iterations=3"])
    assert err.value.key == "reconstruct.params.iterations"
    assert "the model card of modl_brain_sim lets a run change nothing (overridable), not " \
           "'iterations'" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_modl", ["reconstruct.params.cg_iterations=3"])
    assert err.value.key == "reconstruct.params.cg_iterations"
    assert "lets a run change iterations (overridable), not 'cg_iterations'" in err.value.message


def test_weights_without_a_card_still_list_every_parameter(tmp_path):
    """A bare state dict is built from the pipeline's parameters: all of them are valid."""
    import torch

    from mrirecon.models.registry import build_model, model_defaults

    pt = tmp_path / "bare.pt"
    torch.save(build_model("modl", iterations=2).state_dict(), pt)
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_modl_brain_sim", [f"reconstruct.weights={pt}",
                                             "reconstruct.params.iteratons=3"])
    assert set(_listed(err.value.message)) == set(model_defaults("modl"))
    assert _suggested(err.value.message) == "iterations"
