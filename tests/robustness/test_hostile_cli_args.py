"""Hostile command lines (audit s18/a_cli): an input inside the run's own output folders,
repeated list options, ``train --out`` names and places, empty paths, ``~`` after ``=``, a
closed or full standard output, options whose errors named nothing, ``MPLBACKEND`` garbage and
the benchmark scripts' counts."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrirecon import cli
from mrirecon.cli_train import KINDS
from tests.helpers import ROOT

# the cheapest pipeline that still reads the input and writes every run file
CHEAP = ["--set", "reconstruct.method=zero_filled_rss", "--set", "reconstruct.params={}",
         "--set", "calibrate.method=none", "--set", "export.formats=[hdf5]"]


def _sha(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _exit(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    return err.value.code, capsys.readouterr().err


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ---- 1. an input where the run writes ------------------------------------------------------


@pytest.mark.parametrize("layout", ["reconstructions_file", "dicom_series", "linked_folder"])
def test_an_input_in_a_folder_the_run_writes_is_refused_unchanged(layout, mri_file, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "study"
    if layout == "reconstructions_file":  # raw k-space kept in study/reconstructions/
        inp = study / "reconstructions" / "scan.h5"
        inp.parent.mkdir(parents=True)
        shutil.copy(mri_file, inp)
        argv = ["-i", str(inp), "-o", str(study)]
        place = f"{study / 'reconstructions'}/"
    elif layout == "dicom_series":  # cd study; run --input dicom/series1 --output .
        inp = study / "dicom" / "series1"
        inp.mkdir(parents=True)
        for k in range(3):
            (inp / f"IM{k:04d}").write_bytes(b"scanner data %d" % k)
        monkeypatch.chdir(study)
        argv = ["-i", "dicom/series1", "-o", "."]
        place = "dicom/"
    else:  # OUT/reconstructions is a link to the data's folder
        data = tmp_path / "data"
        data.mkdir()
        inp = data / "scan.h5"
        shutil.copy(mri_file, inp)
        study.mkdir()
        (study / "reconstructions").symlink_to(data, target_is_directory=True)
        argv = ["-i", str(tmp_path / "data" / "*.h5"), "-o", str(study)]
        place = f"{study / 'reconstructions'}/"
    before = _sha(inp)
    code, err = _exit(["run", "mri_cs", *argv, *CHEAP], capsys)
    assert code == 2 and "lies in " + place in err and "would be overwritten" in err, err
    assert "--output" in err and "(nothing was run)" in err
    assert _sha(inp) == before  # was: replaced by its reconstruction / the DICOM export, exit 0


def test_the_output_folder_itself_and_a_glob_over_it_stay_inputs(mri_file, tmp_path):
    """The user's files beside the run's folders are inputs (not refused by the new check)."""
    from mrirecon.pipeline.inputs import expand_inputs

    shutil.copy(mri_file, tmp_path / "a.h5")
    (tmp_path / "reconstructions").mkdir()
    shutil.copy(mri_file, tmp_path / "reconstructions" / "a.h5")  # an earlier run's output
    assert expand_inputs([str(tmp_path)], exclude=tmp_path) == [tmp_path / "a.h5"]
    assert expand_inputs([str(tmp_path / "*.h5")], exclude=tmp_path) == [tmp_path / "a.h5"]
    with pytest.raises(ValueError, match="lies in"):
        expand_inputs([str(tmp_path / "reconstructions")], exclude=tmp_path)


# ---- 2. repeated options -------------------------------------------------------------------


def _parse(argv: list[str]):
    from mrirecon.cli_train import normalise_argv

    argv = normalise_argv(argv)
    return cli.build_parser(cli.command_of(argv)).parse_args(argv)


def test_repeated_list_options_add_up_and_single_values_keep_the_last():
    a = _parse(["run", "mri_cs", "--input", "a.h5", "--input", "b.h5", "c.h5", "-i", "d",
                "--output", "x", "--output", "y"])
    assert a.input == ["a.h5", "b.h5", "c.h5", "d"] and a.output == "y"
    b = _parse(["bench", "--data", "d", "-o", "o", "--methods", "cg_sense", "--methods",
                "zero_filled,l1_wavelet", "--accelerations", "4", "--accelerations", "8", "12",
                "--center-fractions", "0.08", "--center-fractions", "0.04", "0.03"])
    assert b.methods == ["cg_sense", "zero_filled,l1_wavelet"]
    assert b.accelerations == [4.0, 8.0, 12.0] and b.center_fractions == [0.08, 0.04, 0.03]
    c = _parse(["bench", "--data", "d", "-o", "o"])  # the defaults, untouched by a repeat before
    assert c.methods == ["zero_filled,cg_sense,l1_wavelet"] and c.accelerations == [4.0, 8.0]
    r = _parse(["train", "radial", "--out", "r", "--spokes", "21", "--spokes", "40",
                "--size", "64", "--size", "128"])
    assert r.spokes == [21, 40] and r.size == [64, 128]
    assert _parse(["train", "radial", "--out", "r"]).spokes == (40,)
    d = _parse(["train", "denoiser", "--out", "d.pt", "--size", "32", "48", "--size", "64", "64"])
    assert d.size == [64, 64]  # a fixed pair is one value: the last counts


def test_two_inputs_given_as_two_options_are_both_run(mri_file, tmp_path, capsys):
    for name in ("a.h5", "b.h5"):
        shutil.copy(mri_file, tmp_path / name)
    out = tmp_path / "out"
    assert cli.main(["run", "mri_cs", "--input", str(tmp_path / "a.h5"), "--input",
                     str(tmp_path / "b.h5"), "-o", str(out), "--no-progress", *CHEAP]) == 0
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["a.h5", "b.h5"]


# ---- 3, 4. train --out ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"config"}))
def test_train_out_not_ending_in_pt_is_refused_before_training(kind, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code, err = _exit(["train", kind, "--out", "g.yaml", "--threads", "1"], capsys)
    assert code == 2 and "argument --out/--output/-o: g.yaml: " in err and "(e.g. g.pt)" in err, err
    assert time.perf_counter() - t0 < 30 and not list(tmp_path.iterdir())


def test_radial_out_may_be_a_stem(capsys):
    assert _parse(["train", "radial", "--out", "r"]).out == "r"
    assert _parse(["train", "radial", "--out", "r.pt"]).out == "r.pt"
    code, err = _exit(["train", "radial", "--out", "r.v2"], capsys)
    assert code == 2 and "give a stem without a suffix or a name ending in .pt" in err


def test_train_out_where_no_file_can_be_written_is_refused_before_training(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    t0 = time.perf_counter()
    code, err = _exit(["train", "denoiser", "--out", str(afile / "d.pt"), "--max-seconds", "8"],
                      capsys)
    assert code == 2 and f"argument --out/--output/-o: {afile / 'd.pt'}: cannot create the folder ({afile} " \
        "is a file, not a folder)" in err, err
    assert time.perf_counter() - t0 < 3  # was: 8 s of training, then "afile: File exists"
    if os.path.isdir("/proc"):  # os.access says yes to root there; the probe says no
        code, err = _exit(["train", "gmm", "--out", "/proc/g.pt"], capsys)
        assert code == 2 and "argument --out/--output/-o: /proc/g.pt: cannot write into /proc" in err, err


def test_the_write_check_leaves_nothing_behind(tmp_path):
    from mrirecon.cli_types import write_problem

    assert write_problem(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []  # neither the folders nor the probe file


# ---- 5, 8. empty paths and ~ ----------------------------------------------------------------


@pytest.mark.parametrize("argv,option", [
    (["run", "mri_cs", "--input", "", "-o", "o"], "--input/-i"),
    (["run", "mri_cs", "-i", "a.h5", "", "-o", "o"], "--input/-i"),
    (["bench", "--data", "", "-o", "o"], "--data"),
    (["train", "staged_ct", "--out", "s.pt", "--init", ""], "--init"),
    (["train", "gmm", "--out", ""], "--out/--output/-o"),
])
def test_an_empty_path_is_refused_naming_its_option(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _exit(argv, capsys)
    assert code == 2 and f"argument {option}: an empty path (an unset shell variable?)" in err
    assert not list(tmp_path.iterdir())


def test_expand_inputs_refuses_an_empty_path():
    from mrirecon.pipeline.inputs import expand_inputs

    with pytest.raises(ValueError, match=r"input '' is an empty path"):
        expand_inputs([""])


def test_a_tilde_after_the_equals_sign_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    a = _parse(["run", "mri_cs", "--input=~/in.h5", "--output=~/recon"])
    assert a.input == [str(tmp_path / "in.h5")] and a.output == str(tmp_path / "recon")
    b = _parse(["bench", "--data=~/d", "--output=~/b"])
    assert (b.data, b.output) == (str(tmp_path / "d"), str(tmp_path / "b"))
    assert _parse(["simulate", "ct", "--out=~/sim"]).out == str(tmp_path / "sim")
    assert _parse(["train", "gmm", "--out=~/g.pt"]).out == str(tmp_path / "g.pt")
    assert _parse(["train", "staged_ct", "--out", "s.pt", "--init=~/w.pt"]).init == \
        str(tmp_path / "w.pt")


def test_a_refused_run_removes_only_the_parent_folders_it_created(tmp_path, capsys):
    (tmp_path / "kept").mkdir()
    code, err = _exit(["run", "mri_cs", "-i", str(tmp_path / "missing.h5"), "-o",
                       str(tmp_path / "kept" / "b" / "c" / "out")], capsys)
    assert code == 2 and "missing.h5" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]  # was: kept/b/c left


def test_a_refused_bench_removes_only_the_parent_folders_it_created(tmp_path, capsys):
    """The one mechanism (``io.output_lock.locked_output``) that ``run`` uses: a benchmark whose
    only volume cannot be scored left ``kept/b/c`` of ``--output kept/b/c/out``."""
    import h5py

    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "data", volumes=1, slices=1, coils=2, size=(32, 32),
                                   seed=1)
    with h5py.File(path, "a") as f:
        f["kspace"][...] = float("nan")
    (tmp_path / "kept").mkdir()
    code, err = _exit(["bench", "--no-progress", "--data", str(tmp_path / "data"), "--output",
                       str(tmp_path / "kept" / "b" / "c" / "out"), "--methods", "zero_filled",
                       "--accelerations", "4"], capsys)
    assert code == 2 and "NaN or Inf samples" in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if "data" not in p.parts) == ["kept"]  # was: kept/b/c left


def test_a_refused_training_run_removes_only_the_parent_folders_it_created(tmp_path):
    """``train``'s lock (``training.run_checks.lock_output_dir``) is the same mechanism: a run
    refused while holding it left the parents of ``output_dir`` it created."""
    from mrirecon.training.run_checks import lock_output_dir

    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError, match="refused"), \
            lock_output_dir(tmp_path / "kept" / "b" / "c" / "out"):
        assert (tmp_path / "kept" / "b" / "c" / "out" / ".lock").is_file()
        raise ValueError("refused before any work")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]  # was: kept/b/c left


# ---- 6, 9. option types ---------------------------------------------------------------------


def test_workers_0_reaches_the_trainer(monkeypatch, capsys):
    import functools

    from mrirecon.training import modl_deploy

    seen, real = {}, modl_deploy.train

    @functools.wraps(real)
    def fake(out, **kwargs):
        seen.update(kwargs)
        return {"training": {}}

    monkeypatch.setattr(modl_deploy, "train", fake)
    assert cli.main(["train", "modl", "--out", "m.pt", "--workers", "0", "--threads", "1"]) == 0
    assert seen["workers"] == 0  # was: "argument --workers: must be >= 1, got 0"
    code, err = _exit(["train", "modl", "--out", "m.pt", "--workers", "-1"], capsys)
    assert code == 2 and "--workers: must be >= 0" in err


@pytest.mark.parametrize("argv,message", [
    (["run", "", "-i", "a.h5", "-o", "o"], "argument pipeline: an empty name"),
    (["run", ".", "-i", "a.h5", "-o", "o"], "argument pipeline: '.' is a folder"),
    (["train", ""], "argument config: an empty name"),
    (["train", "perceptual", "--out", "p.pt", "--seed", "-5"], "argument --seed: must be >= 0"),
    (["train", "prior", "--out", "q.pt", "--patch", "8"], "argument --patch: must be >= 16"),
    (["simulate", "ct", "--out", "c", "--seed", str(2**64)],
     "argument --seed: must be <= 4294967295 (2**32 - 1)"),
    (["simulate", "mri", "--out", "r", "--trajectory", "radial", "--seed", str(10**15)],
     "argument --seed: must be <= 4294967295"),
    (["train", "gmm", "--out", "g.pt", "--seed", str(2**32)], "argument --seed: must be <="),
    (["train", "denoiser", "--out", "d.pt", "--data-seed", "-1"], "argument --data-seed"),
    (["bench", "--data", "d", "-o", "o", "--mask-type", ""], "argument --mask-type: an empty value"),
])
def test_unclear_errors_name_their_option(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _exit(argv, capsys)
    assert code == 2 and message in err, err
    assert "PosixPath" not in err and "internal error" not in err


def test_the_seed_bound_is_the_packages_and_its_largest_seed_simulates(tmp_path, capsys):
    from mrirecon.sampling.cartesian import MAX_MASK_SEED

    top = str(MAX_MASK_SEED)
    assert _parse(["simulate", "ct", "--out", "c", "--seed", top]).seed == MAX_MASK_SEED
    assert cli.main(["simulate", "ct", "--out", str(tmp_path / "ct"), "--samples", "1", "--size",
                     "16", "--views", "8", "--seed", top, "--threads", "1"]) == 0
    assert cli.main(["simulate", "mri", "--out", str(tmp_path / "r"), "--volumes", "1",
                     "--slices", "1", "--coils", "2", "--size", "16", "16", "--trajectory",
                     "radial", "--seed", top, "--threads", "1"]) == 0
    assert len(capsys.readouterr().out.split()) == 3  # 2 CT files, 1 radial file


def test_prior_patches_at_the_least_size_draw_and_smaller_ones_fail():
    from mrirecon.cli_train import _LEAST
    from mrirecon.training.prior_images import procedural_image
    import numpy as np

    least = _LEAST[("prior", "patch")]
    rng = np.random.default_rng(0)
    for _ in range(300):
        procedural_image(rng, least)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="high - low < 0"):
        for _ in range(300):
            procedural_image(rng, least - 1)


# ---- 7. standard output closed or full ------------------------------------------------------


def _simulate_into(stdout, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrirecon", "simulate", "ct", "--out", str(out),
                           "--samples", "1", "--size", "16", "--views", "8", "--threads", "1"],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, env=_env(),
                          timeout=300)


def test_a_closed_stdout_ends_quietly_and_a_full_one_is_named(tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader is gone: `| head -0`
    try:
        done = _simulate_into(write, tmp_path / "c1")
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr  # was: "internal error: BrokenPipeError", 1
    assert done.stderr.strip() == "" or "error" not in done.stderr.lower(), done.stderr
    assert len(list((tmp_path / "c1").glob("*.hdf5"))) == 2
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            done = _simulate_into(full, tmp_path / "c2")
        assert done.returncode == 2
        assert "error: stdout: No space left on device" in done.stderr, done.stderr


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "mrirecon", "--help"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"]])
def test_help_and_version_into_a_full_disk_fail_named(argv):
    with open("/dev/full", "w") as full:  # argparse swallows the write's OSError: exit 0 was
        done = subprocess.run([sys.executable, "-m", "mrirecon", *argv], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error: stdout: No space left on device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# ---- 11. benchmark scripts -------------------------------------------------------------------


def test_benchmark_counts_are_typed_as_the_cli_counts():
    import re

    plain = [f"{p.name}:{i + 1}" for p in sorted((ROOT / "benchmarks").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines())
             if re.search(r"type=int\b(?!_)", line)]
    assert plain == []
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_operators.py"),
                           "--quick", "--repeats", "0"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert done.returncode == 2 and "argument --repeats: must be >= 1, got 0" in done.stderr


def test_fraction_refuses_one():
    """Fails if ``>= 1`` -> ``> 1``:
    ``--center-fractions 1`` would sample the whole of k-space in a row labelled 4x."""
    from mrirecon.cli_types import fraction

    assert fraction("0.08") == 0.08
    for bad in ("1", "1.0", "0", "2"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be"):
            fraction(bad)
