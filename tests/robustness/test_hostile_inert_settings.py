"""Valid settings that change nothing under the rest of the config (``undersample.views=30``
with undersampling off kept every view; ``calibrate.kernel_width`` with Walsh maps, ``adapt.*``
with adaptation off, ...): byte-identical outputs, exit 0, no word, and ``provenance.json``
recording them as if applied. Now one warning per such key the user set, naming the key, its
value, where it came from and why (``pipeline/inert.py``), in the log and ``provenance.json``."""

from __future__ import annotations

import html
import json
import logging

import pytest
import yaml

from mrirecon.cli import main
from mrirecon.core.config import read_yaml
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline_warned, shipped_pipelines
from mrirecon.pipeline.inert import PARAM_RULES, RULES, inert_rule

#: ``(pipeline, overrides, the inert key, its value as said, a fragment of the reason, overrides
#: under which the same key does count)``; one case at least for every rule of the tables.
CASES = [
    ("ct_fbp", ["undersample.views=30"], "undersample.views", "30",
     "undersample.enabled is false (set undersample.enabled=true to keep 30 views)",
     ["undersample.enabled=true", "undersample.views=30"]),
    ("ct_fbp", ["undersample={enabled: false, views: 30}"], "undersample.views", "30",
     "undersample.enabled is false", ["undersample={enabled: true, views: 30}"]),
    ("ct_fbp", ["undersample.photons=1000"], "undersample.photons", "1000.0",
     "undersample.enabled is false", ["undersample.enabled=true", "undersample.photons=1000"]),
    ("mri_cs", ["undersample.accelerations=[8]"], "undersample.accelerations", "[8]",
     "undersample.enabled is false", ["undersample.enabled=true", "undersample.accelerations=[8]"]),
    ("ct_tv", ["undersample.seed=fixed"], "undersample.seed", "fixed",
     "no dose is simulated (undersample.photons is not set)",
     ["undersample.seed=fixed", "undersample.photons=1000"]),
    ("mri_retrospective", ["undersample.fixed_seed=5"], "undersample.fixed_seed", "5",
     "undersample.seed is 'file'", ["undersample.seed=fixed", "undersample.fixed_seed=5"]),
    ("mri_cs", ["preprocess.compression_method=gcc"], "preprocess.compression_method", "gcc",
     "preprocess.coil_compression is not set",
     ["preprocess.coil_compression=4", "preprocess.compression_method=gcc"]),
    ("mri_retrospective", ["reconstruct.method=grappa", "calibrate.crop=0.3"], "calibrate.crop",
     "0.3", "reconstruct.method grappa uses no coil maps", ["calibrate.crop=0.3"]),
    ("mri_retrospective", ["reconstruct.method=zero_filled_rss", "calibrate.method=walsh"],
     "calibrate.method", "walsh", "reconstruct.method zero_filled_rss uses no coil maps",
     ["calibrate.method=walsh"]),
    ("mri_varnet", ["calibrate.method=espirit"], "calibrate.method", "espirit",
     "varnet estimates its own coil sensitivities", ["calibrate.method=none"]),
    ("mri_modl", ["calibrate.method=none", "calibrate.calib_width=12"], "calibrate.calib_width",
     "12", "calibrate.method is none", ["calibrate.calib_width=12"]),
    ("mri_retrospective", ["calibrate.method=walsh", "calibrate.kernel_width=3"],
     "calibrate.kernel_width", "3", "calibrate.method is walsh and calibrate.kernel_width is an "
     "ESPIRiT setting", ["calibrate.kernel_width=3"]),
    ("mri_learned", ["calibrate.max_cropped_energy=0.1"], "calibrate.max_cropped_energy", "0.1",
     "calibrate.crop is 0: ESPIRiT crops nothing",
     ["calibrate.crop=0.9", "calibrate.max_cropped_energy=0.1"]),
    ("mri_modl", ["adapt.steps=5"], "adapt.steps", "5", "adapt.enabled is false",
     ["adapt.enabled=true", "adapt.steps=5"]),
    ("mri_cs", ["adapt.steps=5"], "adapt.steps", "5", "reconstruct.method l1_wavelet is a "
     "classical method, which adaptation cannot fine-tune", []),  # counts nowhere: no control
    ("ct_learned_adapt", ["adapt.ratio=0.8"], "adapt.ratio", "0.8",
     "CT adaptation holds back every k-th view", ["adapt.validation_fraction=0.25"]),
    ("mri_learned_adapt", ["adapt.rows=null", "adapt.val_stripes=3"], "adapt.val_stripes", "3",
     "adapt.rows is null", ["adapt.val_stripes=3"]),
    ("mri_retrospective", ["postprocess.crop_size=[32, 32]"], "postprocess.crop_size", "[32, 32]",
     "postprocess.crop is recon_size",
     ["postprocess.crop=fixed", "postprocess.crop_size=[32, 32]"]),
    ("mri_retrospective", ["export.series_description=T1 axial"], "export.series_description",
     "T1 axial", "export.formats (hdf5, nifti, png) has no dicom",
     ["export.formats=[dicom]", "export.series_description=T1 axial"]),
    ("mri_cs", ["export.formats=[hdf5]", "report.max_slices_in_figures=1"],
     "report.max_slices_in_figures", "1", "export.formats (hdf5) has no png",
     ["report.max_slices_in_figures=1"]),
    ("mri_cs", ["reconstruct.params.random_shift=false", "reconstruct.params.seed=3"],
     "reconstruct.params.seed", "3", "l1_wavelet: random_shift is false",
     ["reconstruct.params.seed=3"]),
    ("mri_cs", ["reconstruct.params.random_shift=false",
                "reconstruct.params_by_acceleration.8.seed=3"],
     "reconstruct.params_by_acceleration.8.seed", "3", "l1_wavelet: random_shift is false",
     ["reconstruct.params_by_acceleration.8.seed=3"]),
    ("mri_cs", ["reconstruct.params.step=0.5", "reconstruct.params.power_iterations=2"],
     "reconstruct.params.power_iterations", "2", "a fixed step is given (step=0.5)",
     ["reconstruct.params.power_iterations=2"]),
    ("mri_cs", ["reconstruct.method=pnp_nlm", "reconstruct.params={sigma: 0.1, sigma_scale: 2.0}"],
     "reconstruct.params.sigma_scale", "2.0", "pnp_nlm: sigma is given (sigma=0.1)",
     ["reconstruct.method=pnp_nlm", "reconstruct.params={sigma_scale: 2.0}"]),
    ("mri_cs", ["reconstruct.method=epll", "reconstruct.params={sigmas: [0.1, 0.05], iterations: 20}"],
     "reconstruct.params.iterations", "20", "epll: sigmas is given (sigmas=[0.1, 0.05])",
     ["reconstruct.method=epll", "reconstruct.params={iterations: 20}"]),
]


@pytest.mark.parametrize("pipeline, overrides, key, value, why, counts", CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_an_inert_override_is_said_once_naming_key_value_origin_and_why(pipeline, overrides, key,
                                                                         value, why, counts):
    warned = _inert(load_pipeline_warned(pipeline, overrides)[2])
    assert len(warned) == 1, warned  # the other overrides count (or make it inert): no word
    assert warned[0].startswith(f"--set over {PIPELINES / pipeline}.yaml: {key}={value} has no "
                                "effect: "), warned
    assert why in warned[0]
    # the same key where it does count, and the pipeline as shipped: nothing said
    assert _inert(load_pipeline_warned(pipeline, counts)[2]) == []
    assert load_pipeline_warned(pipeline)[2] == []


def _inert(warned: list[str]) -> list[str]:
    """The inert-setting warnings of ``warned``, without the notes of a changed
    ``reconstruct.method`` (the file's tables not used, its params kept), which are said too."""
    return [w for w in warned if "tuned for" not in w
            and "(the file's reconstruct.method)" not in w]


def test_every_rule_of_the_tables_has_a_case():
    hit, params = set(), set()
    for pipeline, overrides, key, *_ in CASES:
        config = load_pipeline_warned(pipeline, overrides)[0]
        if (rule := inert_rule(config, key)) is not None:
            hit.add(RULES.index(rule))
        else:
            params.add(key.rsplit(".", 1)[1])
    assert hit == set(range(len(RULES))), sorted(set(range(len(RULES))) - hit)
    assert params == {r.name for r in PARAM_RULES}


@pytest.mark.parametrize("name", shipped_pipelines())
def test_no_shipped_pipeline_holds_an_inert_setting(name, tmp_path):
    """Run as shipped nothing is said; copied as one's own file (every key that differs from
    the schema's default counts as chosen) nothing either."""
    assert load_pipeline_warned(name)[2] == []
    own = tmp_path / f"{name}.yaml"
    own.write_text((PIPELINES / f"{name}.yaml").read_text())
    assert load_pipeline_warned(str(own))[2] == []


def test_own_file_keys_that_differ_from_the_defaults_are_judged_and_blamed_on_the_file(tmp_path):
    data = read_yaml(PIPELINES / "ct_learned_adapt.yaml")
    data["adapt"]["enabled"] = False  # steps: 100 and lr: 1.0e-4 are the defaults
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump(data, sort_keys=False))
    warned = load_pipeline_warned(str(own))[2]
    assert warned == [f"{own}: adapt.save_weights=true has no effect: adapt.enabled is false (set "
                      "adapt.enabled=true to fine-tune the model on each scan)"]
    warned = load_pipeline_warned(str(own), ["adapt.lr=0.01"])[2]
    assert [w.split(": adapt.")[0] for w in warned] == [f"--set over {own}", str(own)]
    assert "adapt.lr=0.01 has no effect" in warned[0]


def test_the_warning_reaches_the_log_and_provenance(ct_dir, tmp_path, caplog):
    fast = ["--set", "export.formats=[hdf5]", "--set", "report.enabled=false", "--no-progress"]
    out = tmp_path / "inert"
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        assert main(["run", "ct_fbp", "-i", str(ct_dir / "observation_test_000.hdf5"), "-o",
                     str(out), "--set", "undersample.views=12", *fast[:2], "--no-progress"]) == 0
    said = (f"--set over {PIPELINES / 'ct_fbp'}.yaml: undersample.views=12 has no effect: "
            "undersample.enabled is false (set undersample.enabled=true to keep 12 views)")
    assert said in caplog.messages
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config_warnings"] == [said]
    assert provenance["config"]["undersample"]["views"] == 12  # recorded as given, now with a word
    assert f"<p class='warn'>warning: {html.escape(said)}</p>" in (out / "report.html").read_text()
    plain = tmp_path / "plain"
    assert main(["run", "ct_fbp", "-i", str(ct_dir / "observation_test_000.hdf5"), "-o",
                 str(plain), *fast]) == 0
    assert json.loads((plain / "provenance.json").read_text())["config_warnings"] == []


def test_a_shipped_key_an_override_makes_inert_is_not_said(tmp_path):
    """``ct_learned --set undersample.enabled=false`` turns the shipped 30 views off on purpose:
    only what the user set is judged. In one's own copy the file's views=30 is the user's."""
    assert load_pipeline_warned("ct_learned", ["undersample.enabled=false"])[2] == []
    own = tmp_path / "ct_learned.yaml"
    own.write_text((PIPELINES / "ct_learned.yaml").read_text())
    assert load_pipeline_warned(str(own), ["undersample.enabled=false"])[2] == [
        f"{own}: undersample.views=30 has no effect: undersample.enabled is false (set "
        "undersample.enabled=true to keep 30 views)"]


def test_a_parameter_inert_at_one_table_entry_only_is_not_said():
    """``reconstruct.params.power_iterations`` of l1_wavelet is inert only where a fixed ``step``
    is given; with ``step`` in the 4x entry alone, the 8x slices still estimate their step by
    power iteration: no "has no effect" warning (it was inert for every entry in the shipped
    case of the existing test)."""
    from mrirecon.pipeline.definitions import load_pipeline_warned

    _, _, warned = load_pipeline_warned("mri_cs", [
        "reconstruct.params_by_acceleration.4.step=0.5", "reconstruct.params.power_iterations=2"])
    assert not any("power_iterations" in w for w in warned), warned
    # the same setting with step in every entry is inert, and said
    _, _, warned = load_pipeline_warned("mri_cs", [
        "reconstruct.params.step=0.5", "reconstruct.params.power_iterations=2"])
    assert any("power_iterations=2 has no effect" in w for w in warned), warned
