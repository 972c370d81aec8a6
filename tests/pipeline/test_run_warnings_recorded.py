"""What ``mrirecon run`` says about the model and the config reaches the run's records, once:
warnings about the model itself in ``provenance.json`` and the report, training-range warnings
logged per input and naming it, the table note logged once per run (docs/robustness.md)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from mrirecon.io.weights import write_weights
from mrirecon.models import build_model
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

#: A MoDL that builds and runs in milliseconds.
TINY = {"iterations": 1, "layers": 3, "features": 4, "cg_iterations": 2}
FAST = ["calibrate.calib_width=12", "calibrate.kernel_width=4",
        "export.formats=[hdf5]"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Two one-slice, two-coil inputs of different sizes (both outside modl_brain_sim's range)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("in")
    out = {}
    for name, size, seed in (("a", (32, 24), 5), ("b", (48, 32), 6)):
        (p,) = simulate_mri_dataset(root / name, volumes=1, slices=1, coils=2, size=size,
                                    seed=seed, resolution=2)
        out[name] = p.rename(root / f"{name}.h5")
    return out


def _run(pipeline: str, sets: list[str], inputs: list[Path], output: Path) -> dict:
    config, text = load_pipeline(pipeline, sets)
    assert run_pipeline(config, [str(p) for p in inputs], output, progress=False,
                        config_text=text) == 0
    return json.loads((output / "provenance.json").read_text())


@pytest.mark.parametrize("case", ["untrained", "no card", "card without range"])
def test_warnings_about_the_model_reach_provenance_and_report(case, inputs, tmp_path, caplog):
    """Untrained weights (reconstruct.weights=null), weights without a card, a card without
    training_range: each was said on the console only; provenance.json's config_warnings was
    [] and the report showed the metrics without a caveat."""
    params = "reconstruct.params={" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"
    if case == "untrained":
        sets, words = ["reconstruct.weights=null", params], "runs with untrained weights"
    else:
        card = None if case == "no card" else {"model": {"name": "modl", "params": dict(TINY)}}
        pt = write_weights(tmp_path / "w.pt", build_model("modl", **TINY).state_dict(), card)
        sets = [f"reconstruct.weights={pt}"] + ([params] if case == "no card" else [])
        words = "no training range is checked"
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        prov = _run("mri_modl", [*FAST, *sets], [inputs["a"]], tmp_path / "o")
    said = [r.getMessage() for r in caplog.records if words in r.getMessage()]
    assert len(said) == 1, said  # logged once
    assert prov["config_warnings"] == said, prov["config_warnings"]
    report = (tmp_path / "o" / "report.html").read_text()
    head = re.findall(r"<p class='warn'>warning: (.*?)</p>", report)  # the report's banner
    assert sum(words in line for line in head) == 1, head


def test_training_range_warnings_are_logged_per_input_naming_it(inputs, tmp_path, caplog):
    """Two inputs outside modl_brain_sim's range: the log said 6 range lines naming no input,
    the second input's coil and acceleration lines not at all (provenance held 4 per file)."""
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        prov = _run("mri_modl_brain_sim", FAST, [inputs["a"], inputs["b"]], tmp_path / "o")
    logged = [r.getMessage() for r in caplog.records if "training range" in r.getMessage()]
    for f in prov["files"]:
        name = Path(f["input"]).name
        recorded = [w for w in f["warnings"] if "training range" in w]
        assert len(recorded) >= 3, recorded  # matrix, coils, acceleration at least
        mine = [line for line in logged if line.startswith(f"{name}: ")]
        assert mine == recorded  # each logged once, as recorded, naming the input
    assert len(logged) == sum("training range" in w for f in prov["files"] for w in f["warnings"])


def test_the_table_note_is_logged_once_per_run(inputs, tmp_path, caplog):
    """reconstruct.params sets iterations over a shipped table: the INFO note was logged at
    load and again by run_pipeline's validation ("pipeline: reconstruct.params sets ...")."""
    note = "reconstruct.params sets iterations for every"
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        _run("mri_cs", ["reconstruct.params.iterations=3", *FAST], [inputs["a"]],
             tmp_path / "o")
    assert sum(note in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    config = load_pipeline("mri_cs", ["reconstruct.params.iterations=3", *FAST])[0]
    from dataclasses import replace

    built = replace(config, load_warnings=None, pipeline_file=None)  # a config built in code
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        assert run_pipeline(built, [str(inputs["a"])], tmp_path / "c", progress=False) == 0
    assert sum(note in r.getMessage() for r in caplog.records) == 1  # validated here: said here


def test_untrained_weights_are_seeded_so_two_runs_agree(inputs, tmp_path):
    """reconstruct.weights=null built the model unseeded: two identical runs differed by
    4.8-6.3 % and drew from the caller's global random stream."""
    import h5py
    import torch

    params = "reconstruct.params={" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"
    images = []
    for i in range(2):
        torch.manual_seed(100 + i)  # a caller's stream in another state each time
        _run("mri_modl", [*FAST, "reconstruct.weights=null", params], [inputs["a"]],
             tmp_path / f"o{i}")
        (out,) = (tmp_path / f"o{i}").rglob("*.h5")
        with h5py.File(out, "r") as f:
            images.append(f["reconstruction"][()])
    assert (images[0] == images[1]).all()
