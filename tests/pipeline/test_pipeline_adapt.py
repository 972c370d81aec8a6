"""The pipeline's ``adapt:`` stage: off by default, validated, adapted weights saved beside the
outputs and hashed in provenance.json, shipped weights untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.training.weights import WEIGHTS_DIR, available_weights


@pytest.fixture(scope="module")
def mri_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri_adapt")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=4, size=(48, 48), seed=5, resolution=2)
    return out


def test_adapt_is_off_by_default_and_validated():
    config, _ = load_pipeline("mri_modl")
    assert config.adapt.enabled is False
    with pytest.raises(ConfigError, match=r"adapt\.enabled: adaptation fine-tunes a learned model"):
        load_pipeline("mri_cs", ["adapt.enabled=true"])
    with pytest.raises(ConfigError, match=r"adapt\.lr: lr must be in \(0, 1\]"):
        load_pipeline("mri_learned_adapt", ["adapt.lr=-1"])
    with pytest.raises(ConfigError, match=r"adapt\.stpes: unknown key \(did you mean 'steps'\?\)"):
        load_pipeline("mri_learned_adapt", ["adapt.stpes=3"])
    # E2E-VarNet estimates its own maps: the SSDU loss (through the calibrated maps) fell while
    # PSNR dropped 4.1 dB; with the calibrated maps (estimate_sensitivities=false) it may adapt
    with pytest.raises(ConfigError, match=r"adapt\.enabled: 'varnet' estimates its own coil "
                                          r"sensitivities"):
        load_pipeline("mri_varnet", ["adapt.enabled=true"])
    load_pipeline("mri_varnet", ["adapt.enabled=true", "reconstruct.weights=null",
                                 "reconstruct.params.estimate_sensitivities=false"])
    config, _ = load_pipeline("mri_learned_adapt")
    assert config.adapt.enabled and config.adapt.method == "zs_ssl" and config.reconstruct.method == "modl"
    config, _ = load_pipeline("ct_learned_adapt")
    assert config.adapt.enabled and config.modality == "ct"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif("modl_fastmri_diverse" not in available_weights(), reason="weights not shipped")
def test_mri_adapt_pipeline_saves_and_hashes_the_adapted_weights(mri_dir, tmp_path):
    from mrirecon.training.weights import load_model

    shipped = WEIGHTS_DIR / "modl_fastmri_diverse.pt"  # mri_learned_adapt's model
    digest = _sha(shipped)
    config, text = load_pipeline("mri_learned_adapt", [
        "undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4",
        "adapt.steps=2", "adapt.val_every=1", "adapt.rows=null", "adapt.time_budget_s=null",
        "export.formats=[hdf5]"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(mri_dir)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["status"] == "ok" and f["metrics"]["ssim"] > 0.3
    adapt = f["adapt"]
    assert adapt["method"] == "zs_ssl" and adapt["steps"] == 2 and adapt["val_steps"] == [0, 1, 2]
    weights = out / f["outputs"]["adapted_weights"]  # relative to the output folder
    assert weights.parent == out / "adapted" and weights.is_file()
    assert adapt["weights_sha256"] == _sha(weights)
    load_model("modl", {}, weights)  # a loadable state dict with its card
    assert _sha(shipped) == digest


@pytest.mark.skipif("modl_fastmri_diverse" not in available_weights(), reason="weights not shipped")
def test_an_adaptation_cut_by_its_time_budget_says_how_to_repeat_it(mri_dir, tmp_path):
    """How many steps fit in ``time_budget_s`` depends on the machine and its load (the shipped
    60 s allowed 7-8 of 200 steps at fastMRI size; a busy core halved them, and the image moved
    by 2 % relative): provenance records the settings that repeat the run's adaptation, and
    they give the same image bit for bit. They include the thread count: under another one
    (or another CPU type) the adapted weights differ at float32 rounding, image ~1e-5."""
    import h5py
    import torch

    sets = ["undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4",
            "adapt.steps=500", "adapt.val_every=2", "adapt.rows=null", "adapt.patience=1000",
            "adapt.time_budget_s=3", "export.formats=[hdf5]"]
    runs = {}
    for name, extra in (("budget", []), ("again", None)):
        if extra is None:  # the recorded line: --threads N, then --set pairs
            words = runs["budget"]["adapt"]["reproduce"].split()
            assert words[:2] == ["--threads", str(torch.get_num_threads())]
            extra = [w for w in words[2:] if w != "--set"]
        config, text = load_pipeline("mri_learned_adapt", sets + extra)
        out = tmp_path / name
        assert run_pipeline(config, [str(mri_dir)], out, progress=False, config_text=text) == 0
        (runs[name],) = json.loads((out / "provenance.json").read_text())["files"]
        with h5py.File(next((out / "reconstructions").glob("*.h5"))) as f:
            runs[name]["image"] = f["reconstruction"][()]
    first = runs["budget"]["adapt"]
    assert first["stopped"] == "time_budget" and 0 < first["steps"] < 500, first
    assert first["reproduce"] == (f"--threads {torch.get_num_threads()} --set "
                                  f"adapt.time_budget_s=null --set adapt.steps={first['steps']}")
    assert runs["again"]["adapt"]["steps"] == first["steps"]
    assert (runs["again"]["image"] == runs["budget"]["image"]).all()


@pytest.mark.skipif("modl_fastmri_diverse" not in available_weights(), reason="weights not shipped")
def test_a_partial_echo_is_adapted_on_whole_slices(mri_dir, tmp_path, caplog):
    """With a partial echo the operator's mask is (H, W), and readout stripes (adapt.rows) are
    no longer separate problems: the adaptation stopped with "rows (readout stripes) needs a
    Cartesian column mask"; it now runs on whole slices and says so."""
    import logging

    from tests.helpers import fastmri_to_ismrmrd

    pytest.importorskip("ismrmrd")
    raw = tmp_path / "pe.h5"
    fastmri_to_ismrmrd(sorted(mri_dir.glob("*.h5"))[0], raw, first_sample=8)  # 8 of 48 samples
    config, text = load_pipeline("mri_learned_adapt", [
        "undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4",
        "adapt.steps=2", "adapt.val_every=1", "adapt.rows=16", "adapt.time_budget_s=null",
        "export.formats=[hdf5]"])
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(config, [str(raw)], tmp_path / "out", progress=False, config_text=text) == 0
    (f,) = json.loads((tmp_path / "out" / "provenance.json").read_text())["files"]
    assert f["status"] == "ok" and f["adapt"]["steps"] == 2
    assert "on whole slices, not 16-row readout stripes" in caplog.text
    assert any("partial echo" in w and "left unsampled" in w for w in f["warnings"])


@pytest.mark.skipif("primal_dual_lodopab" not in available_weights(), reason="weights not shipped")
def test_ct_adapt_pipeline_runs(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    data = tmp_path / "ct"
    simulate_ct_dataset(data, geometry="parallel", views=60, photons=4096.0, size=32, seed=3,
                        samples=1, part="test", sources="phantom")
    config, text = load_pipeline("ct_learned_adapt", ["adapt.steps=1", "adapt.val_every=1",
                                                      "adapt.save_weights=false",
                                                      "export.formats=[hdf5]"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(data / "observation_test_000.hdf5")], out, progress=False,
                        config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["status"] == "ok" and f["adapt"]["steps"] == 1 and "adapted_weights" not in f["outputs"]


def _followed(message: str) -> list[str]:
    """The ``--set KEY=VALUE`` settings a refusal advises; any other ``word=value`` it names is
    not a setting one can paste (the message said "or set estimate_sensitivities=false")."""
    import re

    sets = re.findall(r"--set (\S+=\S+)", message)
    loose = [w for w in re.findall(r"[\w.]+=\S+", message) if w not in sets]
    assert loose == [], f"advice that is no --set: {loose}"
    return [s.rstrip(",;)") for s in sets]


def test_the_own_maps_refusal_advises_only_what_the_weights_allow(tmp_path):
    """mri_varnet with adapt: the refusal ended "or set estimate_sensitivities=false", which is
    no key; reconstruct.params.estimate_sensitivities=false then loaded and the run was refused
    by the card of varnet_fastmri_diverse (overridable: none). With that card the clause is
    gone; for weights without a card (their parameters are the pipeline's), it names the full
    keys, and following them loads the pipeline and the model."""
    import torch

    from mrirecon.models.registry import build_model
    from mrirecon.pipeline.runner import _load_model

    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_varnet", ["adapt.enabled=true"])
    assert "MoDL" in str(err.value) and _followed(str(err.value)) == []
    # weights trained with estimate_sensitivities: false, saved without a card
    weights = tmp_path / "own_varnet.pt"
    small = {"num_cascades": 2, "chans": 4, "pools": 2}
    torch.save(build_model("varnet", estimate_sensitivities=False, init_seed=0, **small)
               .state_dict(), weights)
    base = ["adapt.enabled=true", f"reconstruct.weights={weights}",
            *(f"reconstruct.params.{k}={v}" for k, v in small.items())]
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_varnet", base)
    advice = _followed(str(err.value))
    assert "reconstruct.params.estimate_sensitivities=false" in advice
    config = load_pipeline("mri_varnet", [*base, *advice])[0]
    assert config.calibrate.method != "none"
    model, _ = _load_model(config, "cpu")
    assert getattr(model, "sensitivity", None) is None
