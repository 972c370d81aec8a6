"""Hostile parameter values: a YAML mapping where one value goes (``iterations: {4: 300, 8: 1000}``),
a per-acceleration / per-view table entry that the model's own checks refuse, and paths that
exist but are no file of the kind asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mrirecon.cli import main
from mrirecon.core.checks import param_problem
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline

MAPPING_HINT = "not a mapping"


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as end:
        return end.code


@pytest.mark.parametrize("name, override, key", [
    ("mri_learned", "reconstruct.params.iterations={4: 5, 8: 10}", "reconstruct.params.iterations"),
    ("mri_cs", "reconstruct.params.lam={4: 1.0e-3}", "reconstruct.params.lam"),
    ("ct_tv", "reconstruct.params_by_views.30.rho={a: 1}", "reconstruct.params_by_views.30.rho"),
    ("mri_pnp", "reconstruct.params_by_acceleration.4.lam={a: 1}",
     "reconstruct.params_by_acceleration.4.lam"),
])
def test_a_mapping_for_one_value_is_refused_at_load(name, override, key):
    """A mapping passed every load check (only numbers, strings and lists were judged); every
    input then failed on a bare TypeError naming no key ("'dict' object cannot be interpreted
    as an integer"), exit 1."""
    with pytest.raises(ConfigError) as err:
        load_pipeline(name, [override])
    assert err.value.key == key and err.value.source.endswith(f"{name}.yaml")
    assert MAPPING_HINT in err.value.message and "params_by_acceleration" in err.value.message


def test_a_mapping_in_a_pipeline_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmodality: mri\nreconstruct:\n  method: tv\n"
                    "  params: {lam: 1.0e-3, iterations: {4: 300, 8: 1000}}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(path))
    assert (err.value.source, err.value.key) == (str(path), "reconstruct.params.iterations")


@pytest.mark.parametrize("override", ["model.params.iterations={4: 5, 8: 10}",
                                      "model.params.features={a: 1}"])
def test_a_mapping_in_a_training_config_is_refused_before_training(override, tmp_path, capsys):
    """``mrirecon train`` met the mapping inside the model's constructor: "internal error:
    TypeError: 'dict' object cannot be interpreted as an integer", exit 1."""
    out = tmp_path / "run"
    assert _exit_code(["train", "train_modl_brain_sim", "--set", override,
                       "--set", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] + ": must be one value, not a mapping" in err
    assert "internal error" not in err and not out.exists()


def test_a_parameter_that_takes_a_mapping_still_does():
    assert param_problem("model_params", {"features": 8}, None, "dict[str, Any] | None") is None
    assert param_problem("denoiser_params", {"depth": 3}) is None  # build_model's keyword


def _pnp_model():
    from mrirecon.training.weights import load_pretrained

    return load_pretrained("pnp_dncnn_diverse")


def _table(entry: dict, **params):
    from mrirecon.pipeline.schema import ReconstructConfig

    return ReconstructConfig("pnp_dpir", params=params, weights="pnp_dncnn_diverse",
                             params_by_acceleration={4.0: entry})


@pytest.mark.parametrize("value", ["0", "0.5"])
def test_a_table_entry_the_model_refuses_is_refused_before_any_input(value, mri_file, tmp_path,
                                                                     capsys):
    """``sigma_min`` 0 in a table entry failed every input on "math domain error"; 0.5 (over the
    card's ``sigma_max`` 0.1) ran a rising noise schedule, exit 0; in ``reconstruct.params`` both
    were refused when the model was loaded."""
    out = tmp_path / "out"
    key = "reconstruct.params_by_acceleration.4.sigma_min"
    assert _exit_code(["run", "mri_pnp", "-i", str(mri_file), "-o", str(out), "--set",
                       "undersample.enabled=true", "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"{key}: PnPDPIR: need 0 < sigma_min <= sigma_max, got {value}, 0.1" in err
    assert not (out / "reconstructions").exists()


def test_a_negative_sigma_in_a_table_is_refused_at_load():
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_pnp", ["reconstruct.params_by_acceleration.8.sigma_max=-1"])
    assert err.value.key == "reconstruct.params_by_acceleration.8.sigma_max"
    assert "must be finite and >= 0" in err.value.message


def test_each_entry_meets_the_checks_of_reconstruct_params():
    """The entry (under ``reconstruct.params``) is built as ``reconstruct.params`` is: the
    setting to blame is named, the file too; the entries together when no one alone is wrong;
    a setting ``reconstruct.params`` replaces is not the entry's; the caller's random stream is
    left as it was."""
    from mrirecon.pipeline.param_tables import check_model_table

    model = _pnp_model()
    where = "reconstruct.params_by_acceleration.4"
    with pytest.raises(ConfigError) as err:
        check_model_table(model, _table({"iterations": 40, "sigma_min": 0.5}), "p.yaml")
    assert (err.value.source, err.value.key) == ("p.yaml", f"{where}.sigma_min")
    with pytest.raises(ConfigError) as err:  # each fine with the card's other value
        check_model_table(model, _table({"sigma_min": 0.05, "sigma_max": 0.02}), "p.yaml")
    assert err.value.key == where and "got 0.05, 0.02" in err.value.message
    with pytest.raises(ConfigError, match=rf"{where}\.iterations: .*iterations must be"):
        check_model_table(model, _table({"iterations": 0}))
    # reconstruct.params' sigma_min replaces the entry's on every slice: that one never runs
    assert check_model_table(model, _table({"sigma_min": 0.5}, sigma_min=0.01)) == []
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert check_model_table(model, _table({"iterations": 7, "sigma_min": 0.01})) == []
    assert torch.equal(torch.rand(3), expected)
    assert (model.iterations, model.sigma_min) == (20, 0.005)  # the model's own values stay


def test_the_noise_range_warning_reads_the_values_each_entry_runs(caplog):
    """The denoiser's training-range warning read only ``reconstruct.params`` (the built
    model's values): an entry's ``sigma_min`` below the card's noise levels ran unwarned."""
    from mrirecon.pipeline.param_tables import check_model_table

    model = _pnp_model()
    low = model.model_card["training_range"]["noise_levels"][0] / 2
    with caplog.at_level("WARNING", logger="mrirecon.pipeline"):
        said = check_model_table(model, _table({"sigma_min": low}))
    assert len(said) == 1 and f"sigma_min {low:g} (reconstruct.params_by_acceleration.4)" in said[0]
    assert "outside the noise levels" in said[0] and said[0] in caplog.text
    assert check_model_table(model, _table({"sigma_min": low * 4})) == []


def test_a_schedule_set_after_building_is_checked():
    """``sigma_min`` set on a built DPIR (what a table entry did) failed on "math domain error"
    at 0 and ran a rising schedule above ``sigma_max``."""
    from mrirecon.models.registry import build_model

    model = build_model("pnp_dpir", depth=2, features=4, init_seed=0)
    for bad in (0.0, 0.5):
        model.sigma_min = bad
        with pytest.raises(ValueError, match=r"PnPDPIR: need 0 < sigma_min <= sigma_max"):
            model.sigmas()


def test_weights_that_are_a_device_are_named_so(mri_file, tmp_path, capsys):
    """``/dev/null`` as the weights was a "weights file /dev/null does not exist"."""
    from mrirecon.io.weights import resolve_weights

    with pytest.raises(ValueError, match=r"/dev/null is not a regular file"):
        resolve_weights("/dev/null")
    assert _exit_code(["run", "mri_learned", "-i", str(mri_file), "-o", str(tmp_path / "out"),
                       "--set", "reconstruct.weights=/dev/null"]) == 2
    assert "reconstruct.weights: /dev/null is not a regular file" in capsys.readouterr().err


def test_a_folder_given_as_the_pipeline_is_named_so(tmp_path, monkeypatch):
    from mrirecon.pipeline.definitions import pipeline_path, training_config_path

    monkeypatch.chdir(tmp_path)
    for name in ("adir.yaml", "adir"):
        (tmp_path / name).mkdir()
        with pytest.raises(ValueError, match=rf"pipeline '{name}' is a folder, not a YAML file"):
            pipeline_path(name)
    with pytest.raises(ValueError, match=r"training config 'adir' is a folder"):
        training_config_path("adir")


def test_a_symlink_loop_as_input_is_named_so(tmp_path):
    from mrirecon.pipeline.inputs import expand_inputs

    a, b, dangling = tmp_path / "loopA", tmp_path / "loopB", tmp_path / "gone.h5"
    os.symlink(b, a)
    os.symlink(a, b)
    os.symlink("nowhere.h5", dangling)
    with pytest.raises(FileNotFoundError, match=r"input .*loopA is a symbolic link loop"):
        expand_inputs([str(a)])
    with pytest.raises(FileNotFoundError,
                       match=r"gone.h5 is a symbolic link to nowhere.h5, which does not exist"):
        expand_inputs([str(dangling)])
    with pytest.raises(FileNotFoundError, match=r"input .*missing.h5 does not exist"):
        expand_inputs([str(Path(tmp_path, "missing.h5"))])
