"""Typed configs at their rules' bounds: booleans for numbers, clearing a mapping inside a
merged ``--set``, a key set twice, the other config kind's files, blame on ``--set``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mrirecon.core.config import (ConfigError, apply_overrides, check_repeated, from_dict,
                                  refuse_other_kind)


@dataclasses.dataclass(frozen=True)
class _Typed:
    count: int = 1
    weight: float = 1.0


@pytest.mark.parametrize("key, message", [("count", "expected an integer, got True"),
                                          ("weight", "expected a number, got True")])
def test_a_boolean_is_no_number_in_a_config(key, message):
    """``batch_size: true`` / ``--set loss.l1=true``: YAML booleans are ints in Python; they are
    refused naming the key (accepting them made ``true`` a batch of 1 and ``false`` a 0 weight)."""
    with pytest.raises(ConfigError, match=rf"f\.yaml: {key}: {message}"):
        from_dict(_Typed, {key: True}, source="f.yaml")


@pytest.mark.parametrize("kind, name, override, message", [
    ("pipeline", "mri_cs.yaml", "calibrate.calib_width=true", "expected an integer, got True"),
    ("train", "train_varnet_brain_sim.yaml", "loss.l1=true", "expected a number, got True")])
def test_a_boolean_for_a_typed_key_is_refused_through_load_config(kind, name, override, message):
    import mrirecon
    from mrirecon.core.config import load_config
    from mrirecon.pipeline.schema import PipelineConfig
    from mrirecon.training.config import TrainConfig

    path = Path(mrirecon.__file__).parent / "pipelines" / name
    cls = PipelineConfig if kind == "pipeline" else TrainConfig
    with pytest.raises(ConfigError, match=rf"--set over .*{override.split('=')[0]}: {message}"):
        load_config(cls, path, [override])


def test_an_empty_mapping_inside_a_merged_mapping_clears_that_key():
    """``--set reconstruct={params: {}}`` clears ``params`` as ``reconstruct.params={}`` does,
    instead of merging nothing into it (the old settings stayed without a word)."""
    data = {"reconstruct": {"method": "tv", "params": {"lam": 0.1, "iterations": 5}}}
    out = apply_overrides(data, ["reconstruct={params: {}}"], quiet=True)
    assert out["reconstruct"] == {"method": "tv", "params": {}}
    assert apply_overrides(data, ["reconstruct.params={}"], quiet=True) == out


def test_a_cleared_mapping_then_replaced_by_a_value_is_set_twice():
    """``params={}`` then ``params=5``: one key set twice, refused; clear-then-fill stays allowed."""
    with pytest.raises(ConfigError, match=r"reconstruct\.params: set twice"):
        check_repeated(["reconstruct.params={}", "reconstruct.params=5"])
    check_repeated(["reconstruct.params={}", "reconstruct.params.lam=5"])


def test_a_file_with_two_keys_of_the_other_kind_names_the_right_command():
    """The rule is "at least two of the other kind's keys and none of its own"."""
    with pytest.raises(ConfigError, match=r"mrirecon train t\.yaml"):
        refuse_other_kind({"output_dir": "o", "optim": {"lr": 1e-3}}, "t.yaml", "run")
    with pytest.raises(ConfigError, match=r"mrirecon run p\.yaml"):
        refuse_other_kind({"modality": "mri", "reconstruct": {}}, "p.yaml", "train")
    refuse_other_kind({"output_dir": "o"}, "t.yaml", "run")  # one key: left to the key check


def test_an_error_on_a_section_is_blamed_on_the_set_that_changed_a_key_under_it():
    """A section-level error (key ``calibrate``) after ``--set calibrate.crop=...`` names the
    override, not the file where nothing under ``calibrate`` was written."""
    err = ConfigError("p.yaml", "calibrate", "bad").blamed_on(["calibrate.crop=5"])
    assert err.source == "--set over p.yaml"
    assert ConfigError("p.yaml", "export", "bad").blamed_on(["calibrate.crop=5"]).source == "p.yaml"
