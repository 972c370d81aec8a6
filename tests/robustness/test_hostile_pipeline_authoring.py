"""Hostile pipeline authoring: pipeline YAML files, ``--set`` overrides and the Python API given
what a user plausibly writes, each of which gave a silently different run or a misleading error
(an audit of pipeline YAML, ``--set`` and the API; ``docs/robustness.md``)."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
from pathlib import Path

import pytest

from mrirecon.cli import main
from mrirecon.core.checks import param_problem
from mrirecon.core.config import ConfigError, apply_overrides, check_repeated
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline, load_pipeline_warned
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.validate import validate_pipeline

QUICK_CT = ["export.formats=[hdf5]"]
QUICK_MRI = ["undersample.enabled=true", "calibrate.method=walsh", "export.formats=[hdf5]",
             "report.enabled=false"]


def _prov(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# ---- 1: a method changed in code keeps the old method's tables --------------------------------


def test_a_method_changed_in_code_drops_the_old_methods_tables(mri_file, tmp_path):
    """``dataclasses.replace(reconstruct, method="cg_sense", params={})`` on ``mri_cs`` ran CG-SENSE
    with L1-wavelet's per-acceleration iterations (1000 at 8x: NMSE 4.20, exit 0), where
    ``--set reconstruct.method=cg_sense`` drops them with a warning. Now the same: dropped, the
    warning in the log and ``provenance.json``; a table given with the new method is kept."""
    cfg = load_pipeline("mri_cs", QUICK_MRI)[0]
    assert cfg.reconstruct.params_by_acceleration  # mri_cs's L1-wavelet table
    moved = dataclasses.replace(cfg, reconstruct=dataclasses.replace(
        cfg.reconstruct, method="cg_sense", params={}))
    assert validate_pipeline(moved).reconstruct.params_by_acceleration == {}
    code = run_pipeline(moved, [mri_file], tmp_path / "o", progress=False)
    prov = _prov(tmp_path / "o")
    assert code == 0 and prov["config"]["reconstruct"]["params_by_acceleration"] == {}
    assert any("tuned for l1_wavelet, not used with reconstruct.method=cg_sense" in w
               for w in prov["config_warnings"])
    own = dataclasses.replace(cfg, reconstruct=dataclasses.replace(
        cfg.reconstruct, method="cg_sense", params={},
        params_by_acceleration={4: {"iterations": 7}}))
    assert validate_pipeline(own).reconstruct.params_by_acceleration == {4: {"iterations": 7}}


def test_a_run_from_python_records_the_settings_that_change_nothing(ct_dir, tmp_path):
    """``mrirecon run`` records inert settings in ``provenance.json`` (``config_warnings``); a
    run from Python recorded none (its config's were judged only by ``load_pipeline_warned``,
    and a config changed or built in code never)."""
    cfg = load_pipeline("ct_fbp", QUICK_CT + ["report.enabled=false"])[0]
    changed = dataclasses.replace(cfg, undersample=dataclasses.replace(cfg.undersample, views=30))
    assert run_pipeline(changed, [ct_dir], tmp_path / "o", progress=False) == 0
    (said,) = _prov(tmp_path / "o")["config_warnings"]
    assert "undersample.views=30 has no effect: undersample.enabled is false" in said


def test_a_loaded_configs_inert_settings_are_said_once(ct_dir, tmp_path, caplog):
    """``load_pipeline`` logs the settings that change nothing; ``run_pipeline`` of the same
    config judged them again and logged each a second time. Now it records the load's warnings
    (``provenance.json``) without saying them again; a config changed since is judged anew."""
    caplog.set_level(logging.WARNING)
    cfg = load_pipeline("ct_fbp", QUICK_CT + ["report.enabled=false", "undersample.views=12"])[0]
    assert run_pipeline(cfg, [ct_dir], tmp_path / "o", progress=False) == 0
    said = [r.getMessage() for r in caplog.records if "undersample.views=12" in r.getMessage()]
    assert len(said) == 1, said
    (recorded,) = _prov(tmp_path / "o")["config_warnings"]
    assert "undersample.views=12 has no effect" in recorded


# ---- 2: a mapping given to --set for a section ----------------------------------------------


def test_a_mapping_for_a_section_is_merged_into_it(caplog):
    """``--set 'reconstruct.params={lam: 5}'`` on ``ct_tv`` reset ``iterations`` 300 -> 100 and
    ``--set 'calibrate={calib_width: 20}'`` on ``mri_modl_brain_sim`` reset ``crop`` 0.0 -> 0.95
    (26.07 -> 24.71 dB), without a word. Now merged, with an INFO line; an empty mapping still
    clears a mapping (``reconstruct.params={}``) and is refused for a whole section."""
    with caplog.at_level(logging.INFO, logger="mrirecon.config"):
        ct = load_pipeline("ct_tv", ["reconstruct.params={lam: 5}"])[0]
    assert ct.reconstruct.params == {"iterations": 300, "lam": 5}
    assert any("merged into reconstruct.params" in r.getMessage() and "iterations" in r.getMessage()
               for r in caplog.records)
    mri = load_pipeline("mri_modl_brain_sim", ["calibrate={calib_width: 20}"])[0]
    assert (mri.calibrate.calib_width, mri.calibrate.crop) == (20, 0.0)
    cleared = load_pipeline("mri_cs", ["reconstruct.method=cg_sense", "reconstruct.params={}"])[0]
    assert cleared.reconstruct.params == {}
    with pytest.raises(ConfigError, match=r"calibrate: an empty mapping would replace the whole "
                                          r"section by its defaults"):
        load_pipeline("mri_modl_brain_sim", ["calibrate={}"])
    # the settings of a method the overrides change are that method's: replaced, not merged
    fbp = load_pipeline("ct_tv", ["reconstruct.method=fbp", "reconstruct.params={filter: hann}"])[0]
    assert fbp.reconstruct.params == {"filter": "hann"} and fbp.reconstruct.params_by_views == {}
    cg = load_pipeline("mri_cs", ["reconstruct.method=cg_sense",
                                  "reconstruct.params_by_acceleration={4: {iterations: 30}}"])[0]
    assert cg.reconstruct.params_by_acceleration == {4: {"iterations": 30}}  # not 8x's 1000
    model = apply_overrides({"model": {"name": "varnet", "params": {"chans": 10}}},
                            ["model.name=modl", "model.params={layers: 2}"])["model"]
    assert model == {"name": "modl", "params": {"layers": 2}}


# ---- 3: a pipeline file in the working directory named like a shipped one -------------------


def test_a_local_file_named_like_a_shipped_pipeline_is_ambiguous(tmp_path, monkeypatch, ct_dir,
                                                                 caplog):
    """``mrirecon run mri_cs`` ran the shipped file and ``mri_cs.yaml`` a local edited copy, and
    neither the log nor ``provenance.json`` said which file ran. Both are refused naming the two
    files; ``./mri_cs.yaml`` is the local one; the file that ran is logged and recorded."""
    monkeypatch.chdir(tmp_path)
    text = (PIPELINES / "mri_cs.yaml").read_text().replace("lam: 1.0e-4", "lam: 0.5")
    Path("mri_cs.yaml").write_text(text)
    for name in ("mri_cs", "mri_cs.yaml"):
        with pytest.raises(ValueError, match=r"names both the shipped pipeline .*mri_cs.yaml and "
                                             r"the file .*mri_cs.yaml .*write ./mri_cs.yaml"):
            load_pipeline(name)
    local = load_pipeline("./mri_cs.yaml")[0]
    assert local.reconstruct.params["lam"] == 0.5
    assert local.pipeline_file == str((tmp_path / "mri_cs.yaml").resolve())
    cfg = load_pipeline("ct_fbp", QUICK_CT)[0]
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(cfg, [ct_dir], tmp_path / "o", progress=False) == 0
    shipped = str((PIPELINES / "ct_fbp.yaml").resolve())
    assert _prov(tmp_path / "o")["pipeline_file"] == shipped
    assert any(shipped in r.getMessage() for r in caplog.records)


# ---- 4: ' #' in a --set value ----------------------------------------------------------------


def test_a_hash_in_a_set_value_is_refused_unless_quoted():
    """``--set "export.series_description=Scan #2 low-dose"`` wrote SeriesDescription 'Scan'
    (YAML reads `` #...`` as a comment), exit 0."""
    with pytest.raises(ConfigError, match=r"export.series_description: value 'Scan #2 low-dose' "
                                          r"holds ' #'.*the value would be 'Scan'.*quote it"):
        load_pipeline("ct_fbp", ["export.series_description=Scan #2 low-dose"])
    cfg = load_pipeline("ct_fbp", ['export.series_description="Scan #2 low-dose"'])[0]
    assert cfg.export.series_description == "Scan #2 low-dose"
    assert load_pipeline("ct_fbp", ["export.series_description=Scan#2"])[0].export.series_description == "Scan#2"


# ---- 5: one key overridden twice --------------------------------------------------------------


def test_a_key_overridden_twice_on_the_command_line_is_refused_naming_both(ct_dir, tmp_path,
                                                                           capsys):
    """The later of two ``--set`` of one key won without a word (a key twice in a YAML file is
    refused, as is ``bench --weights`` twice); also a later override that replaces an earlier
    one (``lam=5``, then ``params={}``). Clear, then fill is one meaning."""
    run = ["run", "ct_tv", "-i", str(ct_dir), "-o", str(tmp_path / "o")]
    err = _cli_error([*run, "--set", "reconstruct.params.lam=5", "--set",
                      "reconstruct.params.lam=50"], capsys)
    assert ("--set: reconstruct.params.lam: set twice, by 'reconstruct.params.lam=5' and then "
            "'reconstruct.params.lam=50'") in err
    err = _cli_error([*run, "--set", "reconstruct.params.lam=5", "--set", "reconstruct.params={}"],
                     capsys)
    assert "set twice, by 'reconstruct.params.lam=5' and then 'reconstruct.params={}'" in err
    err = _cli_error([*run, "--set", "reconstruct.params_by_views.30.lam=5", "--set",
                      "reconstruct.params_by_views={30.0: {lam: 6}}"], capsys)
    assert "reconstruct.params_by_views.30.lam: set twice" in err
    err = _cli_error(["train", str(PIPELINES / "train_modl_brain_sim.yaml"), "--set",
                      "optim.lr=0.1", "--set", "optim.lr=0.01"], capsys)
    assert "optim.lr: set twice" in err
    assert not (tmp_path / "o").exists()
    check_repeated(["reconstruct.params={}", "reconstruct.params.iterations=50",
                    "reconstruct.params={rho: 0.1}", "undersample.views=60"])


# ---- 6: a section left empty in a file --------------------------------------------------------


def test_an_empty_section_in_a_file_is_refused(tmp_path):
    """``reconstruct:`` with every key under it commented out ran the schema's defaults
    (``cg_sense``) without a word."""
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nmodality: mri\nreconstruct:\n  # method: l1_wavelet\n"
                    "  # params: {lam: 0.01}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: reconstruct: the section is empty"):
        load_pipeline(str(path))


# ---- 7: parameter values of the wrong kind pass the load check --------------------------------


@pytest.mark.parametrize("value, said", [("[0.1]", "must be one number, got the list [0.1]"),
                                         ("yes", "must be a number, got True")])
def test_a_weight_of_the_wrong_kind_is_refused_at_load(mri_file, tmp_path, capsys, value, said):
    """``lam=[0.1]`` and ``lam=yes`` passed the load check, then every input failed after
    ESPIRiT ("l1_wavelet: lam must be a finite number >= 0, got True"), exit 1."""
    err = _cli_error(["run", "mri_cs", "-i", str(mri_file), "-o", str(tmp_path / "o"),
                      "--set", f"reconstruct.params.lam={value}"], capsys)
    assert "reconstruct.params.lam" in err and said in err
    assert not (tmp_path / "o").exists()
    # a parameter whose signature takes a sequence (per-stage weights) still takes a list
    assert param_problem("lam", [0.1, None], 0.1, "float | Sequence[float | None] | None") is None


# ---- 8: Python API argument types -------------------------------------------------------------


def test_api_arguments_of_another_type_are_taken_or_named(ct_dir, tmp_path):
    """``run_pipeline(cfg, "data/ct", out)`` said "input d does not exist", a ``Path`` gave
    "'PosixPath' object is not iterable", a dict config an AttributeError, and a string of
    overrides "--set: e: override must look like key.path=value"."""
    from mrirecon.training.run import train_from_config

    cfg = load_pipeline("ct_fbp", QUICK_CT + ["report.enabled=false"])[0]
    for i, inputs in enumerate([str(ct_dir), ct_dir, [ct_dir]]):
        assert run_pipeline(cfg, inputs, tmp_path / f"o{i}", progress=False) == 0
    with pytest.raises(TypeError, match=r"run_pipeline: config must be a PipelineConfig.*"
                                        r"load_pipeline"):
        run_pipeline({"name": "x", "modality": "ct"}, [ct_dir], tmp_path / "d", progress=False)
    with pytest.raises(TypeError, match=r"load_pipeline: overrides must be a list .*write "
                                        r"\['export.formats=\[hdf5\]'\]"):
        load_pipeline("ct_fbp", "export.formats=[hdf5]")
    with pytest.raises(TypeError, match=r"train_from_config: overrides must be a list"):
        train_from_config(PIPELINES / "train_modl_brain_sim.yaml", "optim.lr=0.01")


# ---- 9: the report of a run started from Python -----------------------------------------------


def test_the_report_of_a_run_from_python_shows_its_configuration(ct_dir, tmp_path):
    """``report.html``'s Configuration section was empty for ``run_pipeline`` called without
    ``config_text``."""
    cfg = load_pipeline("ct_fbp", QUICK_CT)[0]
    assert run_pipeline(cfg, [ct_dir], tmp_path / "o", progress=False) == 0
    page = (tmp_path / "o" / "report.html").read_text()
    (shown,) = re.findall(r"<h2>Configuration</h2><pre>(.*?)</pre>", page, re.S)
    assert "reconstruct:" in html.unescape(shown) and "method: fbp" in html.unescape(shown)


# ---- 10: unclear messages ---------------------------------------------------------------------


def test_messages_name_what_is_wrong(tmp_path, monkeypatch):
    """An existing ``mine.txt`` was "not found"; ``accelerations.0=8`` was "expected an integer,
    got {'0': 8}" blamed on the shipped file; an empty file "name: is required"; a method
    parameter one level too high an unknown key without a hint; ``weights: ~/x.pt`` was not
    expanded."""
    mine = tmp_path / "mine.txt"
    mine.write_text((PIPELINES / "mri_cs.yaml").read_text())
    with pytest.raises(ValueError, match=r"mine.txt' is not a .yaml / .yml file"):
        load_pipeline(str(mine))
    with pytest.raises(ConfigError, match=r"undersample.accelerations: is a list: its elements "
                                          r"cannot be set by index"):
        load_pipeline("mri_cs", ["undersample.accelerations.0=8"])
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: .*the file is empty"):
        load_pipeline(str(empty))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: w\nmodality: mri\nreconstruct:\n  method: l1_wavelet\n  lam: 0.01\n")
    with pytest.raises(ConfigError, match=r"reconstruct.lam: unknown key.*lam is a parameter of "
                                          r"l1_wavelet: give it under reconstruct.params"):
        load_pipeline(str(wrong))
    home = tmp_path / "home"
    home.mkdir()
    for suffix in (".pt", ".yaml"):
        (home / f"w{suffix}").symlink_to(PIPELINES.parent / "weights" / f"modl_brain_sim{suffix}")
    monkeypatch.setenv("HOME", str(home))
    mine = tmp_path / "learned.yaml"
    mine.write_text("name: l\nmodality: mri\nreconstruct:\n  method: modl\n  weights: ~/w.pt\n")
    config, _, _ = load_pipeline_warned(str(mine))
    assert config.reconstruct.weights == str(home / "w.pt")
    built = dataclasses.replace(config, reconstruct=dataclasses.replace(config.reconstruct,
                                                                        weights="~/w.pt"))
    assert validate_pipeline(built).reconstruct.weights == str(home / "w.pt")


def test_apply_overrides_alone_merges_and_refuses():
    """The loader's override step as ``mrirecon bench --set`` and training configs use it."""
    data = {"model": {"name": "modl", "params": {"iterations": 5, "lam": 0.1}}}
    assert apply_overrides(data, ["model.params={lam: 0.2}"])["model"]["params"] == \
        {"iterations": 5, "lam": 0.2}
    assert apply_overrides(data, ["model.params={}"])["model"]["params"] == {}
    with pytest.raises(TypeError, match="overrides must be a list"):
        apply_overrides(data, "model.params.lam=1")


@pytest.mark.parametrize("command, given, other", [
    ("run", "train_modl_brain_sim.yaml", "train"), ("train", "mri_cs.yaml", "run"),
    ("train", "ct_fbp.yaml", "run")])
def test_a_file_of_the_other_kind_by_path_names_the_right_command(tmp_path, capsys, command,
                                                                 given, other):
    """``pipelines/`` holds both kinds. By path, a training config given to ``run`` was refused
    for its first key ("output_dir: unknown key; valid keys: adapt, ..."), a pipeline given to
    ``train`` for "modality: unknown key (did you mean 'model'?)"; by name the first already got
    the hint. Nothing is created."""
    path = PIPELINES / given
    argv = [command, str(path)] + (["--input", str(tmp_path), "--output", str(tmp_path / "o")]
                                   if command == "run" else [])
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"run it with `mrirecon {other} {path}`" in err and "unknown key" not in err
    assert not (tmp_path / "o").exists()


def _bomb(levels: int = 9) -> str:
    """Nine nested anchors of nine aliases each: 1.3 KB, 387 million values expanded."""
    parts = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("key", ["description", "reconstruct.params.lam"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, key):
    """Its first check formatted the whole expansion into "expected a string, got ..." (37 s,
    2.7 GB, then "internal error: MemoryError"); one level more ran out of memory."""
    import time

    text = (PIPELINES / "mri_cs.yaml").read_text()
    path = tmp_path / "bomb.yaml"
    if key == "description":
        text = re.sub(r"(?m)^description: .*$", f"description: {_bomb()}", text)
    else:
        text = re.sub(r"(?m)^  params: \{lam: .*\}$", f"  params: {{lam: {_bomb()}}}", text)
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: <root>: its anchors and aliases expand to "
                                          r"[\d,]+ values"):
        load_pipeline(str(path))
    assert time.perf_counter() - start < 30  # the refusal costs one pass over the shared nodes


def test_anchors_a_config_may_use_are_read_and_messages_stay_bounded(tmp_path):
    """An anchor reused a few times is fine; a wrong value's message shows a bounded repr."""
    text = (PIPELINES / "mri_cs.yaml").read_text()
    text = re.sub(r"(?m)^description: .*$", "description: &d plain words\nx_note: *d", text)
    path = tmp_path / "anchors.yaml"
    path.write_text(text.replace("x_note: *d\n", ""))
    load_pipeline(str(path))
    long = tmp_path / "long.yaml"
    long.write_text(re.sub(r"(?m)^description: .*$", "description: [" + ", ".join(["w"] * 5000)
                           + "]", (PIPELINES / "mri_cs.yaml").read_text()))
    with pytest.raises(ConfigError, match=r"description: expected a string, got \['w', 'w'") as err:
        load_pipeline(str(long))
    assert len(str(err.value)) < 400


def test_a_yaml_nested_thousands_deep_is_refused_by_name(tmp_path):
    """PyYAML's parser recursed past Python's limit: "internal error: RecursionError"."""
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nmodality: mri\ndescription: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: <root>: it nests lists or mappings "
                                          r"thousands deep"):
        load_pipeline(str(path))


# ---- a YAML syntax error names its cause, tags only when a tag was it -------------------------

@pytest.mark.parametrize("text, cause, tag", [
    ("name: x\nreconstruct: {method: cg_sense}\nreconstruct: {method: tv}\n",
     "found the key 'reconstruct' twice", False),
    ("name: x\nreconstruct:\n\tmethod: cg_sense\n", "found character '\\t'", False),
    ("name: x\ndevice: [cpu\n", "expected ',' or ']'", False),
    ("name: x\ndevice: !!python/object/apply:os.system ['true']\n",
     "could not determine a constructor for the tag", True),
    ("name: x\ndevice: !custom cpu\n", "could not determine a constructor for the tag", True),
])
def test_a_yaml_error_says_tags_are_refused_only_when_a_tag_caused_it(tmp_path, text, cause, tag):
    """"(tags such as !!python/... are refused)" followed every YAML error, a key given twice or
    a tab indent too, pointing the user at a tag they never wrote."""
    from mrirecon.core.config import read_yaml

    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert str(path) in message and "invalid YAML" in message and cause in message, message
    assert ("tags such as !!python/... are refused" in message) == tag, message
