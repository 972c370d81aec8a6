"""A per-acceleration / per-view setting that the pipeline's ``reconstruct.params`` replaces, and
what ``mrirecon bench`` said (or did not say) that ``mrirecon run`` says.

* ``--set reconstruct.params_by_acceleration.4.lam=1e-3`` over ``mri_cs`` (whose ``params`` hold
  ``lam``) gave the shipped image byte for byte, with one INFO line; now a warning of the
  inert-settings channel (log, ``provenance.json`` ``config_warnings``, report) naming the fix.
* The benchmark scored learned models on data outside their card's training range without a
  word (``run`` warns); now each learned method's ``data_warnings`` say it, in ``run``'s words.
* The benchmark noted ``preprocess.remove_oversampling=false`` ("the default gives the same
  image"), a setting it chose itself, on every volume without readout oversampling and for every
  learned method.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mrirecon.cli import main
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline_warned
from tests.helpers import cli_exit, simulated_ct_dir

SHADOWED = "has no effect: the pipeline's reconstruct.params.{0} holds for every {1}"


@pytest.fixture(scope="module")
def mri_4x(tmp_path_factory) -> Path:
    """One retrospectively 4x undersampled 4-coil volume (1 slice, 48 x 48)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri4x")
    simulate_mri_dataset(out, volumes=1, slices=1, coils=4, size=(48, 48), seed=1,
                         acceleration=4, center_fraction=0.16, resolution=2)
    return out


@pytest.fixture(scope="module")
def mri_full(tmp_path_factory) -> Path:
    """One fully sampled 12-coil volume (1 slice, 48 x 48): outside the brain_sim cards' 128 x 128
    and 4 .. 8 coils, without readout oversampling."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mrifull")
    simulate_mri_dataset(out, volumes=1, slices=1, coils=12, size=(48, 48), seed=3, resolution=2)
    return out


def _run(argv: list[str]) -> int:
    return cli_exit("run", "--no-progress", *argv)


def _recon(out: Path) -> np.ndarray:
    (path,) = (out / "reconstructions").glob("*.h5")
    with h5py.File(path) as f:
        return f["reconstruction"][()]


# ---- 2: a table entry the user sets under the file's params ---------------------------------


@pytest.mark.parametrize("pipeline, overrides, key, setting, what, fix", [
    ("mri_cs", ["reconstruct.params_by_acceleration.4.lam=1e-3"],
     "reconstruct.params_by_acceleration.4.lam=0.001", "lam=0.0001", "acceleration",
     "--set 'reconstruct.params={}', and --set reconstruct.params_by_acceleration.8.lam=0.0001"),
    ("mri_cs", ["reconstruct.params_by_acceleration={4: {lam: 1e-3}}"],
     "reconstruct.params_by_acceleration.4.lam=0.001", "lam=0.0001", "acceleration",
     "--set 'reconstruct.params={}', and --set reconstruct.params_by_acceleration.8.lam=0.0001"),
    ("mri_tv", ["reconstruct.params_by_acceleration.8.iterations=500"],
     "reconstruct.params_by_acceleration.8.iterations=500", "iterations=100", "acceleration",
     "--set 'reconstruct.params={}', then --set reconstruct.params.rho=0.001 to keep "
     "reconstruct.params' other settings, and "
     "--set reconstruct.params_by_acceleration.4.iterations=100"),
    ("mri_tv", ["reconstruct.params_by_acceleration.4.rho=0.01"],
     "reconstruct.params_by_acceleration.4.rho=0.01", "rho=0.001", "acceleration",
     "--set reconstruct.params.iterations=100"),
    ("ct_tv", ["reconstruct.params_by_views.60.iterations=50"],
     "reconstruct.params_by_views.60.iterations=50", "iterations=300", "view count",
     "--set reconstruct.params_by_views.30.iterations=300"),
    ("ct_pnp", ["reconstruct.params_by_views.30.lam=1e-3"],
     "reconstruct.params_by_views.30.lam=0.001", "lam=0.0001", "view count",
     "--set 'reconstruct.params={}', and --set reconstruct.params_by_views.60.lam=0.0001"),
])
def test_a_table_entry_the_files_params_replace_is_warned(pipeline, overrides, key, setting, what,
                                                          fix, caplog):
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        _, _, warned = load_pipeline_warned(pipeline, overrides)
    name = setting.split("=")[0]
    (msg,) = [w for w in warned if key in w]
    assert msg.startswith(f"--set over {PIPELINES / pipeline}.yaml: {key} ")
    assert SHADOWED.format(setting, what) in msg, msg
    assert f"in place of each entry's {name}" in msg and fix in msg, msg
    assert sum(msg in r.getMessage() for r in caplog.records) == 1  # logged once


def test_the_fix_it_names_runs_the_entry_and_warns_no_more(mri_4x, tmp_path, caplog):
    # mri_cs on 4x data: --set ...4.lam=1e-3 gave the shipped image byte for byte; the fix the
    # warning names (params cleared, lam in every entry) runs it, as params.lam=1e-3 does
    common = ["mri_cs", "--input", str(mri_4x), "--set", "export.formats=[hdf5]"]
    table = ["--set", "reconstruct.params_by_acceleration.4.lam=1e-3"]
    assert _run([*common, "--output", str(tmp_path / "default")]) == 0
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        assert _run([*common, *table, "--output", str(tmp_path / "table")]) == 0
    prov = json.loads((tmp_path / "table" / "provenance.json").read_text())
    (msg,) = prov["config_warnings"]
    assert "reconstruct.params_by_acceleration.4.lam=0.001 has no effect" in msg
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "has no effect" in r.getMessage()] == [msg]
    assert np.array_equal(_recon(tmp_path / "table"), _recon(tmp_path / "default"))  # as found
    fix = ["--set", "reconstruct.params={}", "--set", "reconstruct.params_by_acceleration.8.lam=1e-4"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        assert _run([*common, *table, *fix, "--output", str(tmp_path / "fixed")]) == 0
    assert not [r for r in caplog.records if "has no effect" in r.getMessage()]
    assert json.loads((tmp_path / "fixed" / "provenance.json").read_text())["config_warnings"] == []
    assert _run([*common, "--set", "reconstruct.params.lam=1e-3", "--output", str(tmp_path / "flat")]) == 0
    assert json.loads((tmp_path / "flat" / "provenance.json").read_text())["config_warnings"] == []
    # params the user sets over the file's table do what they say on purpose: the INFO line only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        assert load_pipeline_warned("mri_tv", ["reconstruct.params.lam=1e-3"])[2] == []
    assert any("reconstruct.params sets lam for every acceleration, in place of "
               "reconstruct.params_by_acceleration's values" in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)
    fixed, default = _recon(tmp_path / "fixed"), _recon(tmp_path / "default")
    assert not np.array_equal(fixed, default)
    np.testing.assert_allclose(fixed, _recon(tmp_path / "flat"), rtol=1e-5, atol=1e-6 * fixed.max())


def test_a_users_own_file_with_both_is_warned_and_a_copy_of_a_shipped_one_is_not(tmp_path):
    shipped = yaml.safe_load((PIPELINES / "mri_cs.yaml").read_text())
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(shipped))
    assert load_pipeline_warned(copy)[2] == []  # lam in params, iterations per entry: no overlap
    shipped["reconstruct"]["params_by_acceleration"][8]["lam"] = 1e-3
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(shipped))
    (msg,) = load_pipeline_warned(both)[2]
    assert msg.startswith(f"{both}: reconstruct.params_by_acceleration.8.lam=0.001 has no effect: "
                          f"reconstruct.params.lam=0.0001 ({both}) holds for every acceleration")
    assert "remove reconstruct.params.lam to run the entries' lam" in msg


def test_the_report_says_it(mri_4x, tmp_path):
    out = tmp_path / "r"
    assert _run(["mri_tv", "--input", str(mri_4x), "--output", str(out), "--set",
                 "export.formats=[hdf5]", "--set", "reconstruct.params.iterations=5",
                 "--set", "reconstruct.params_by_acceleration.4.rho=0.01"]) == 0
    report = html.unescape((out / "report.html").read_text())
    assert "reconstruct.params_by_acceleration.4.rho=0.01 has no effect" in report


# ---- 3: the bench and the model cards' training range ---------------------------------------


def test_mri_bench_warns_learned_models_outside_their_training_range(mri_full, tmp_path, caplog):
    out = tmp_path / "b"
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        assert main(["--threads", "1", "bench", "--no-progress", "--data", str(mri_full),
                     "--output", str(out), "--accelerations", "4", "--center-fractions", "0.16",
                     "--methods", "zero_filled,modl_brain_sim,varnet_brain_sim"]) == 0
    name = next(mri_full.glob("*.h5")).name
    recs = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for m in ("modl_brain_sim", "varnet_brain_sim"):  # the weights and their card are named
        said = [w for w in recs[m]["data_warnings"] if "training range" in w]
        see = f"(see its card mrirecon/weights/{m}.yaml, 'known failures')"
        assert said == [  # run's words, naming the slices (the volume has one)
            f"{name}: slice 0: matrix 48 x 48 is outside the {m} training range 128 x 128 .. "
            f"128 x 128 {see}",
            f"{name}: slice 0: coils 12 is outside the {m} training range 4 .. 8 {see}",
            # 0.16 of 48 columns: 8, below the 10-21 of the 128-column masks it was trained on
            f"{name}: slice 0: centre band (contiguous sampled columns through the k-space centre, "
            f"which the coil maps are calibrated from) 8 is outside the {m} training range "
            f"10 .. 21 {see}"], recs[m]
    assert not any("training range" in w for w in recs["zero_filled"]["data_warnings"])
    vols = {v["method"]: v for v in csv.DictReader(io.StringIO((out / "bench_volumes.csv").read_text()))}
    assert "coils 12 is outside the modl_brain_sim training range" in vols["modl_brain_sim"]["data_warnings"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("matrix 48 x 48 is outside the varnet_brain_sim training range" in m for m in logged), logged
    # `mrirecon run` with the same model on the same file: the same words
    run = tmp_path / "run"
    assert _run(["mri_modl_brain_sim", "--input", str(mri_full), "--output", str(run), "--set",
                 "export.formats=[hdf5]", "--set", "undersample.enabled=true",
                 "--set", "undersample.center_fractions=[0.16]"]) == 0
    ran = [w for f in json.loads((run / "provenance.json").read_text())["files"]
           for w in f["warnings"] if "training range" in w]
    assert ran == [w for w in recs["modl_brain_sim"]["data_warnings"] if "training range" in w]


def test_ct_bench_checks_every_slice_against_the_card(tmp_path):
    """The bench checked the first slice of a volume only: slice 1, whose dropped projection
    leaves it 29 views (``primal_dual_ct_sim``'s card: 30 .. 30), was scored without a word
    where ``run`` warns. Now in ``run``'s words, naming the slice."""
    from mrirecon.bench.ct import run_ct_bench
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    simulate_ct_dataset(tmp_path / "d", views=180, photons=4096.0, size=128, seed=5, samples=2,
                        part="test", sources="phantom")
    path = tmp_path / "d" / "observation_test_000.hdf5"
    with h5py.File(path, "r+") as f:
        data = f["data"][...]
        data[1, 36, :] = 0.0  # view 36 of 180 is one of the 30 the bench keeps at 6x
        f["data"][...] = data
    run_ct_bench(tmp_path / "d", accelerations=(6,), methods=["fbp", "primal_dual_ct_sim"],
                 output_dir=tmp_path / "b", resume=False, progress=False)
    recs = {r["method"]: r for r in map(json.loads,
                                        (tmp_path / "b" / "results.jsonl").read_text().splitlines())}
    said = [w for w in recs["primal_dual_ct_sim"]["data_warnings"] if "training range" in w]
    assert said == ["observation_test_000.hdf5: slice 1 of 2: views 29 is outside the "
                    "primal_dual_ct_sim training range 30 .. 30 (see its card "
                    "mrirecon/weights/primal_dual_ct_sim.yaml, 'known failures')"], said
    assert not any("training range" in w for w in recs["fbp"]["data_warnings"])


def test_bench_judges_the_maps_crop_a_learned_model_is_given(mri_full, tmp_path):
    """The benchmark hands a learned model that takes them uncropped (crop 0) ESPIRiT maps; the
    range check judged the bench's ``calibrate.crop`` (0.95) instead, so `modl_fastmri_diverse`
    (trained on crop-0 maps) was warned "the coil maps' ESPIRiT crop 0.95 is outside the modl
    training range 0 .. 0" on every volume."""
    out = tmp_path / "b"
    assert main(["--threads", "1", "bench", "--no-progress", "--data", str(mri_full),
                 "--output", str(out), "--accelerations", "4", "--center-fractions", "0.16",
                 "--methods", "modl_fastmri_diverse"]) == 0
    (rec,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    assert rec["data_warnings"] and not [w for w in rec["data_warnings"] if "ESPIRiT crop" in w]


def test_ct_bench_warns_a_learned_model_outside_its_training_range(tmp_path):
    from mrirecon.bench import run_ct_bench

    data = simulated_ct_dir(tmp_path / "ct", views=60, size=32, seed=3)
    table = run_ct_bench(data, (2,), ["fbp", "primal_dual_ct_sim"], progress=False, max_volumes=1)
    recs = {r["method"]: r for r in table.records}
    said = [w for w in recs["primal_dual_ct_sim"]["data_warnings"] if "training range" in w]
    assert any("matrix 32 x 32 is outside the" in w for w in said), said
    assert any("detector count" in w for w in said), said
    assert not any("training range" in w for w in recs["fbp"]["data_warnings"])


# ---- 4: notes about the bench's own settings --------------------------------------------------


def test_bench_does_not_note_the_remove_oversampling_it_chose_itself(mri_full, tmp_path, caplog):
    from mrirecon.bench import run_bench

    with caplog.at_level(logging.INFO, logger="mrirecon"):
        table = run_bench(mri_full, accelerations=(4,), methods="zero_filled,modl_brain_sim",
                          center_fractions={4: 0.16}, output_dir=tmp_path, progress=False,
                          verbose=False)
    for rec in table.records:
        assert not any("remove_oversampling" in n for n in rec["data_notes"]), rec["data_notes"]
    assert not any("remove_oversampling" in r.getMessage() for r in caplog.records)
    assert "remove_oversampling" not in (tmp_path / "bench_volumes.csv").read_text().split("\n", 1)[1]
