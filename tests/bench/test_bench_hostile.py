"""`mrirecon bench` on hostile data and settings: a LoDoPaB file without its ground truth, data
that `mrirecon run` warns about, `--set calibrate.*` out of range or read by no method."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path

import h5py
import pytest

from mrirecon.bench import run_bench, run_ct_bench
from mrirecon.cli import main
from mrirecon.pipeline.schema import CalibrateConfig
from tests.helpers import cli_exit, simulated_ct_dir

DEAD = "coil 2 of 4 hold no signal"


@pytest.fixture(scope="module")
def ct_one(tmp_path_factory) -> Path:
    """One LoDoPaB-layout observation (2 samples, 60 views) with its ground truth."""
    return simulated_ct_dir(tmp_path_factory.mktemp("ct"), views=60, size=32, seed=3)


@pytest.fixture(scope="module")
def mri_dead(tmp_path_factory) -> Path:
    """One simulated 4-coil volume (2 slices, 48 x 48) whose coil 2 holds no signal."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder = tmp_path_factory.mktemp("dead")
    (path,) = simulate_mri_dataset(folder, volumes=1, slices=2, coils=4, size=(48, 48), seed=1)
    with h5py.File(path, "a") as f:
        k = f["kspace"][()]
        k[:, 2] = 0
        f["kspace"][...] = k
    return folder


def _ct_folder(src: Path, dst: Path, files: dict[str, str]) -> Path:
    """``dst`` holding ``{new name: name in src}``."""
    dst.mkdir()
    for new, old in files.items():
        shutil.copy(src / old, dst / new)
    return dst


def _bench(argv: list[str]) -> int:
    return cli_exit("bench", "--no-progress", *argv)


# ---- F2: a LoDoPaB observation without its ground truth -------------------------------------


def test_ct_bench_refuses_an_observation_without_its_ground_truth_naming_it(ct_one, tmp_path, capsys):
    # part test complete, part val missing ground_truth_val_001: the whole val part (its 000
    # with its reference included) was dropped, exit 0, the table saying 1 volume
    obs, gt = "observation_test_000.hdf5", "ground_truth_test_000.hdf5"
    data = _ct_folder(ct_one, tmp_path / "d", {obs: obs, gt: gt, "observation_val_000.hdf5": obs,
                                               "ground_truth_val_000.hdf5": gt,
                                               "observation_val_001.hdf5": obs})
    out = tmp_path / "out"
    assert _bench(["--challenge", "ct", "--data", str(data), "--output", str(out),
                   "--accelerations", "2", "--methods", "fbp"]) == 2
    err = capsys.readouterr().err
    assert "ground_truth_val_001.hdf5 is missing, while the other 2 observation files have theirs" in err
    assert "move observation_val_001.hdf5 out of the folder" in err
    assert not (out / "results.jsonl").exists()  # refused before any volume was scored


def test_ct_bench_error_is_true_when_one_file_of_a_single_part_lacks_it(ct_one, tmp_path):
    # was "no ground_truth files next to the observations" beside ground_truth_test_000.hdf5
    obs, gt = "observation_test_000.hdf5", "ground_truth_test_000.hdf5"
    data = _ct_folder(ct_one, tmp_path / "d", {obs: obs, gt: gt, "observation_test_001.hdf5": obs})
    with pytest.raises(FileNotFoundError, match=r"ground_truth_test_001\.hdf5 is missing, while "
                                                r"the other 1 observation file has theirs"):
        run_ct_bench(data, (2,), ["fbp"], progress=False)
    # the first volume alone has its reference: scored
    table = run_ct_bench(data, (2,), ["fbp"], progress=False, max_volumes=1)
    assert [r["volume"] for r in table.records] == [obs]
    # no reference at all: said so
    (data / gt).unlink()
    with pytest.raises(FileNotFoundError, match=r"none of the observation files in .* has its "
                                                r"ground truth \(parts test\)"):
        run_ct_bench(data, (2,), ["fbp"], progress=False)


def test_ct_bench_leaves_out_a_part_without_any_ground_truth_with_a_warning(ct_one, tmp_path, caplog):
    """LoDoPaB's challenge part (no ground truths at all) beside scored parts: left out, said so."""
    obs, gt = "observation_test_000.hdf5", "ground_truth_test_000.hdf5"
    data = _ct_folder(ct_one, tmp_path / "d", {obs: obs, gt: gt, "observation_challenge_000.hdf5": obs})
    table = run_ct_bench(data, (2,), ["fbp"], progress=False)
    assert [r["volume"] for r in table.records] == [obs]
    assert any("part challenge holds no ground_truth_<part>_NNN.hdf5 file at all" in m
               for m in caplog.messages), caplog.messages


# ---- F3: the data warnings of `mrirecon run` ------------------------------------------------


def test_mri_bench_records_and_logs_the_data_warnings_run_gives(mri_dead, tmp_path, caplog):
    # a dead coil (and ESPIRiT's crop lowered on its 4-column band) were warned by `mrirecon
    # run` and dropped by the bench: exit 0, a table without a word
    out = tmp_path / "bench"
    with caplog.at_level(logging.INFO, logger="mrirecon"):
        run_bench(mri_dead, accelerations=(4,), methods="cg_sense,zero_filled_rss",
                  output_dir=out, progress=False, verbose=False)
    recs = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    line = f"{next(mri_dead.glob('*.h5')).name}: all 2 slices: {DEAD}"
    for m in ("cg_sense", "zero_filled_rss"):
        assert any(w.startswith(line) for w in recs[m]["data_warnings"]), recs[m]
    # ESPIRiT's messages only for the method that reconstructs with its maps
    espirit = [w for w in recs["cg_sense"]["data_warnings"] + recs["cg_sense"]["data_notes"]
               if "ESPIRiT" in w]
    assert espirit and not any("ESPIRiT" in w for w in recs["zero_filled_rss"]["data_warnings"]
                               + recs["zero_filled_rss"]["data_notes"])
    vols = list(csv.DictReader(io.StringIO((out / "bench_volumes.csv").read_text())))
    assert [v["method"] for v in vols] == ["cg_sense", "zero_filled_rss"]
    assert all(DEAD in v["data_warnings"] for v in vols)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(DEAD in m for m in logged) == 1  # once per volume, not once per method
    assert any(m.startswith("bench multicoil 4x: " + line) for m in logged)


def test_mri_bench_data_warnings_are_those_of_run(mri_dead, tmp_path):
    # the same line as `mrirecon run` writes to provenance.json, word for word
    out = tmp_path / "run"
    assert main(["--threads", "1", "run", "mri_retrospective", "--input", str(mri_dead),
                 "--output", str(out), "--set", "export.formats=[hdf5]"]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    ran = [w for v in prov["files"] for w in v["warnings"] if DEAD in w]
    table = run_bench(mri_dead, accelerations=(4,), methods="cg_sense", progress=False,
                      verbose=False)
    assert len(ran) == 1 and [w for w in table.records[0]["data_warnings"] if DEAD in w] == ran


def test_ct_bench_records_the_data_warnings(ct_one, tmp_path):
    # 10x of 60 views keeps 6, below the 8 views `mrirecon run` warns about
    table = run_ct_bench(ct_one, (10,), ["fbp"], output_dir=tmp_path, progress=False)
    (rec,) = table.records
    assert any("only 6 views: below 8 views" in w for w in rec["data_warnings"]), rec
    vols = list(csv.DictReader(io.StringIO((tmp_path / "bench_volumes.csv").read_text())))
    assert "only 6 views" in vols[0]["data_warnings"]
    clean = run_ct_bench(ct_one, (2,), ["fbp"], progress=False)
    assert clean.records[0]["data_warnings"] == []


# ---- F4: --set calibrate.* ------------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    # were: exit 0 with the crop lowered to 1 / raised to 0 without a word, "coil maps are all
    # zero" (nan), and an error blaming the mask (calib_width -5)
    ("calibrate.crop=5", r"--set: calibrate.crop: must be in [0, 1], got 5.0"),
    ("calibrate.crop=-3", r"--set: calibrate.crop: must be in [0, 1], got -3.0"),
    ("calibrate.crop=.nan", r"--set: calibrate.crop: must be in [0, 1], got nan"),
    ("calibrate.calib_width=-5", r"--set: calibrate.calib_width: must be >= 1, got -5"),
    ("calibrate.threshold=1", r"--set: calibrate.threshold: must be in [0, 1), got 1"),
])
def test_bench_checks_calibrate_settings_as_run_does(mri_dead, tmp_path, capsys, setting, message):
    out = tmp_path / "out"
    assert _bench(["--data", str(mri_dead), "--output", str(out), "--accelerations", "4",
                   "--methods", "cg_sense", "--set", setting]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not (out / "results.jsonl").exists()


def test_run_bench_checks_its_calibration_argument(mri_dead):
    with pytest.raises(ValueError, match=r"run_bench: calibrate.crop: must be in \[0, 1\], got 5"):
        run_bench(mri_dead, accelerations=(4,), methods="cg_sense", progress=False,
                  calibration=CalibrateConfig(crop=5.0))


def test_bench_refuses_calibrate_settings_no_method_reads(mri_dead, tmp_path, capsys):
    # zero_filled_rss uses no coil maps: calibrate.crop=0.5 changed nothing, exit 0, as
    # `--set sirt.iterations=3` without sirt is refused
    argv = ["--data", str(mri_dead), "--output", str(tmp_path / "o"), "--accelerations", "4",
            "--set", "calibrate.crop=0.5"]
    assert _bench([*argv, "--methods", "zero_filled_rss"]) == 2
    err = capsys.readouterr().err
    assert ("calibrate.crop: none of the methods ['zero_filled_rss'] reconstructs with coil maps, "
            "so the calibration settings would change nothing; remove --set calibrate.crop") in err
    assert _bench([*argv, "--methods", "zero_filled_rss,cg_sense"]) == 0
