"""Interruptions (SIGINT, SIGTERM, SIGKILL) and system faults (a full disk, inputs deleted or
overwritten during a run): what the output folder holds afterwards, and what the user is told."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.run_state import remove_orphans
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import default_signals

ROOT = Path(__file__).resolve().parents[2]
FAST = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
        "export.formats=[hdf5]"]
DEAD_PID = 4_999_999  # above Linux's largest pid_max (2**22): never a live process


def config(*extra):
    return load_pipeline("mri_cs", FAST + ["report.enabled=false", *extra])[0]


def _inputs(mri_file: Path, folder: Path) -> Path:
    """Two inputs, a.h5 and b.h5 (b's k-space doubled, so their outputs differ)."""
    folder.mkdir(parents=True)
    shutil.copy(mri_file, folder / "a.h5")
    shutil.copy(mri_file, folder / "b.h5")
    with h5py.File(folder / "b.h5", "r+") as h5:
        h5["kspace"][...] = h5["kspace"][()] * 2
    return folder


def _prov(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def _metrics(out: Path) -> dict[str, list[str]]:
    return {r[0]: r[1:] for r in list(csv.reader((out / "metrics.csv").open()))[1:]}


def _cli_stopped_at_commit(args: list[str], sig: str, commit: int, cwd: Path):
    """``mrirecon ARGS`` in a new process that sends itself ``SIG`` right after the ``commit``-th
    input's outputs were moved into place (as a Ctrl-C, a scheduler's SIGTERM or a SIGKILL would
    at that moment)."""
    script = f"""
import os, signal, sys
from mrirecon.pipeline import runner
real, calls = runner.commit_outputs, []
def commit(*a, **k):
    real(*a, **k)
    calls.append(1)
    if len(calls) == {commit}:
        os.kill(os.getpid(), signal.{sig})
runner.commit_outputs = commit
from mrirecon.cli import main
sys.exit(main(sys.argv[1:]))
"""
    return _sh([sys.executable, "-c", script, *args], cwd)


def _sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=default_signals,
                          timeout=120)


def _run_args(inp: Path, out: Path, *sets: str) -> list[str]:
    args = ["run", "mri_cs", "--input", str(inp), "--output", str(out), "--no-progress"]
    for s in [*FAST, *sets]:
        args += ["--set", s]
    return args


# -- F1: the run files of an interrupted run ------------------------------------------------------

@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"),
                                             ("SIGTERM", 143, "terminated")])
def test_an_interrupted_rerun_writes_its_run_files_for_what_finished(mri_file, tmp_path, sig,
                                                                     code, word):
    """A rerun with another config stopped after its first input: metrics.csv, report.html and
    provenance.json were the earlier run's (32.2 dB listed beside the new 24.1 dB image); SIGTERM
    also said nothing. Now they list the finished input with this run's metrics, marked
    interrupted, and SIGTERM says "terminated" with exit 143."""
    inp = _inputs(mri_file, tmp_path / "in")
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert run_pipeline(config("report.enabled=true"), [str(inp)], out, progress=False) == 0
    before = _metrics(out)
    new = ["undersample.enabled=true", "report.enabled=true"]
    p = _cli_stopped_at_commit(_run_args(inp, out, *new), sig, 2, tmp_path)
    assert p.returncode == code, p.stderr
    assert p.stderr.rstrip().endswith(f"mrirecon run: {word}"), p.stderr
    prov = _prov(out)
    assert prov["status"] == "interrupted"
    assert prov["interrupted"]["how"].startswith(sig)
    assert prov["interrupted"]["while"] == str(inp / "b.h5")
    assert prov["config"]["undersample"]["enabled"] is True
    assert [f["status"] for f in prov["files"]] == ["ok"]
    # this run's metrics of a.h5, as a complete run of the new config gives them
    assert run_pipeline(config(*new), [str(inp / "a.h5")], fresh, progress=False) == 0
    assert _metrics(out) == _metrics(fresh) and _metrics(out)["a.h5"] != before["a.h5"]
    report = (out / "report.html").read_text()
    assert "interrupted" in report and f"this run was interrupted ({sig}" in report
    assert not list(out.rglob("*.tmp")) and not (out / ".staging").exists()
    # the next run rewrites them: complete
    assert run_pipeline(config(*new), [str(inp)], out, progress=False, resume=True) == 0
    assert _prov(out)["status"] == "complete" and set(_metrics(out)) == {"a.h5", "b.h5"}


def test_a_killed_rerun_leaves_run_files_saying_running_not_the_earlier_runs(mri_file, tmp_path,
                                                                             monkeypatch):
    """SIGKILL cannot be caught: the run files are replaced before the first output is, by this
    run's marked "running" (the earlier run's stayed, describing replaced images). A run stopped
    before it changed anything keeps the earlier run's: they still describe the folder (a
    complete record is not replaced by an empty interrupted one)."""
    from mrirecon.pipeline import volume

    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    assert run_pipeline(config("report.enabled=true"), [str(inp)], out, progress=False) == 0
    text = (out / "provenance.json").read_text()
    assert json.loads(text)["status"] == "complete"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(volume, "process_volume", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config("undersample.enabled=true"), [str(inp)], out, progress=False)
    assert (out / "provenance.json").read_text() == text
    p = _cli_stopped_at_commit(_run_args(inp, out, "undersample.enabled=true",
                                         "report.enabled=true"), "SIGKILL", 1, tmp_path)
    assert p.returncode == -signal.SIGKILL
    prov = _prov(out)
    assert prov["status"] == "running" and prov["config"]["undersample"]["enabled"] is True
    assert prov["files"] == [] and "had not finished" in prov["running"]["message"]
    assert prov["inputs"][str(inp / "b.h5")].startswith("not read")  # no checksum of zero bytes
    assert not (out / "metrics.csv").exists()  # the earlier run's table described a.h5 as it was
    assert "had not finished" in (out / "report.html").read_text()


def test_a_first_run_killed_leaves_a_provenance_saying_running(mri_file, tmp_path):
    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    p = _cli_stopped_at_commit(_run_args(inp, out), "SIGKILL", 1, tmp_path)
    assert p.returncode == -signal.SIGKILL
    assert (out / "reconstructions" / "a.h5").is_file()  # an output without provenance before
    assert _prov(out)["status"] == "running"


# -- F2: a full disk ------------------------------------------------------------------------------

def _no_space(match: str, monkeypatch):
    """``Path.write_bytes`` raises ENOSPC for temporary files whose name holds ``match``."""
    real = Path.write_bytes

    def write_bytes(self, data):
        if match in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_full_disk_at_the_run_files_is_one_line_naming_the_file_exit_2(mri_file, tmp_path,
                                                                         monkeypatch, capsys):
    """Was: "mrirecon run: internal error: OSError: [Errno 28] No space left on device (run with
    --debug …)", exit 1, naming no file."""
    from mrirecon.cli import main

    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    assert run_pipeline(config(), [str(inp)], out, progress=False) == 0
    _no_space(".metrics.csv.", monkeypatch)
    with pytest.raises(SystemExit) as stop:
        main(_run_args(inp, out, "undersample.enabled=true", "report.enabled=false"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("mrirecon run:")]
    assert line == [(f"mrirecon run: error: {out / 'metrics.csv'}: No space left on device (the "
                     "disk is full: free space there (or write to another location) and run "
                     "again)")], err
    assert "internal error" not in err and "Traceback" not in err
    # the earlier run's table is not left beside this run's images
    assert not (out / "metrics.csv").exists() and _prov(out)["status"] != "complete"


def test_a_full_disk_at_an_export_names_the_output_file(mri_file, tmp_path, monkeypatch):
    """The input's error was "OSError: [Errno 28] No space left on device", naming no file."""
    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    _no_space(".nii.gz.", monkeypatch)
    assert run_pipeline(config("export.formats=[hdf5,nifti]"), [str(inp / "a.h5")], out,
                        progress=False) == 1
    error = _prov(out)["files"][0]["error"]
    assert error == (f"{out / 'nifti' / 'a.nii.gz'}: No space left on device (the disk is full: "
                     "free space there (or write to another location) and run again)")
    assert not (out / "reconstructions" / "a.h5").exists()


def test_a_progress_bar_does_not_swallow_the_error(monkeypatch, capsys, tmp_path):
    """The error was glued to the end of the bar's line (train --resume on a full disk)."""
    from tqdm import tqdm

    from mrirecon.cli import main
    from mrirecon.pipeline import runner

    def run_pipeline(*a, **k):
        bar = tqdm(total=10, desc="steps", file=sys.stderr, leave=True)
        bar.update(3)
        raise OSError(errno.ENOSPC, f"{tmp_path}/train_log.csv: No space left on device")

    monkeypatch.setattr(runner, "run_pipeline", run_pipeline)
    with pytest.raises(SystemExit) as stop:
        main(["run", "mri_cs", "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    i = err.index("mrirecon run: error:")
    assert i > 0 and err[i - 1] in "\r\n", repr(err)


def test_a_full_tmpfs_names_the_files_and_is_no_internal_error(mri_file, tmp_path):
    """A real full disk (a 1 MiB tmpfs, filled but 12 kB, then filled): each input fails naming
    its output file, and a disk full from the start ends with one line naming the file, exit 2,
    no traceback (was "internal error: OSError: [Errno 28] No space left on device")."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if _sh(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], tmp_path).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        inp = _inputs(mri_file, tmp_path / "in")
        out, filler = mnt / "o", mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(filler, filler.stat().st_size - 12 * 1024)
        cmd = [sys.executable, "-m", "mrirecon.cli", *_run_args(inp, out, "report.enabled=true")]
        p = _sh(cmd, tmp_path)
        assert p.returncode in (1, 2) and "internal error" not in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and "[Errno" not in p.stderr, p.stderr
        errors = [x for x in p.stderr.splitlines() if "failed on" in x or "mrirecon run:" in x]
        assert errors and all(f"{out}/" in x and "No space left on device" in x for x in errors), \
            p.stderr  # the input fails naming its output, or the run its record (exit 2)
        with open(mnt / "more", "wb", buffering=0) as fh:  # now full
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        p = _sh(cmd, tmp_path)
        assert p.returncode == 2, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith(f"mrirecon run: error: {out}/") and "No space left" in last, last
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr
        assert not [f for f in out.rglob("*") if f.name.endswith(".tmp")]
    finally:
        _sh(["umount", str(mnt)], tmp_path)


# -- F4, F7: inputs deleted or overwritten during the run ------------------------------------------

@pytest.mark.parametrize("when", ["before its checksum", "after its checksum"])
def test_an_input_deleted_during_the_run_says_so(mri_file, tmp_path, monkeypatch, when):
    """Was: "DataFormatError: …: <file>: not a readable HDF5 file ([Errno 2] Unable to
    synchronously open file …)", and the SHA-256 of zero bytes as the deleted file's checksum."""
    from mrirecon.pipeline import runner, volume

    inp = _inputs(mri_file, tmp_path / "in")
    real_process, real_sha = volume.process_volume, runner.sha256

    def process(config, path, *a, **k):
        if Path(path).name == "a.h5" and when == "before its checksum":
            (inp / "b.h5").unlink()
        return real_process(config, path, *a, **k)

    def sha(path):
        digest = real_sha(path)
        if Path(path).name == "b.h5" and when == "after its checksum":
            Path(path).unlink()
        return digest

    monkeypatch.setattr(volume, "process_volume", process)
    monkeypatch.setattr(runner, "sha256", sha)
    out = tmp_path / "out"
    assert run_pipeline(config(), [str(inp)], out, progress=False) == 1
    prov = _prov(out)
    b = str(inp / "b.h5")
    assert prov["files"][1]["error"] == (f"{b}: no such file (deleted or moved after the run "
                                         "listed its inputs?)")
    assert prov["inputs"][b] == "unreadable: No such file or directory"


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_an_input_overwritten_while_read_fails_without_outputs(mri_file, tmp_path, monkeypatch,
                                                               how):
    """``cp`` over an input (same inode, as rsync --inplace) while it was read gave a volume of
    old and new slices, failing only by luck on a check that blamed the data layout."""
    from mrirecon.pipeline import volume

    inp = _inputs(mri_file, tmp_path / "in")
    old = time.time() - 60
    os.utime(inp / "a.h5", (old, old))
    real = volume.process_volume

    def process(config, path, *a, **k):
        result = real(config, path, *a, **k)
        if how == "in place":
            with open(path, "r+b") as fh:
                fh.seek(-8, os.SEEK_END)
                fh.write(b"\1" * 8)
        else:
            shutil.copy(inp / "b.h5", tmp_path / "new.h5")
            os.replace(tmp_path / "new.h5", path)
        return result

    monkeypatch.setattr(volume, "process_volume", process)
    out = tmp_path / "out"
    assert run_pipeline(config(), [str(inp / "a.h5")], out, progress=False) == 1
    error = _prov(out)["files"][0]["error"]
    assert error.startswith(f"{inp / 'a.h5'} changed while it was being read (overwritten or "
                            "replaced?); run again")
    assert not (out / "reconstructions" / "a.h5").exists()
    assert not (out / ".status" / "a.json").exists()


# -- F5, F6: leftovers of killed runs ------------------------------------------------------------

def _aged(*paths: Path) -> None:
    old = time.time() - 60
    for p in paths:
        os.utime(p, (old, old))


def test_a_plain_run_removes_what_killed_runs_left(mri_file, tmp_path):
    """Temporary files and staging folders went only with --resume; a ``.NAME.old-PID`` folder
    (a kill between the two renames of a DICOM series' commit: two series for one scan) never."""
    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    tmp = out / "reconstructions" / ".a.h5.abcd1234.h5.tmp"
    staged = out / ".staging" / f"0-{DEAD_PID}" / "v" / "reconstructions" / ".x.h5.k2j3h4g5.h5.tmp"
    dead = out / "dicom" / f".a.old-{DEAD_PID}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = out / "dicom" / f".b.old-{child.pid}"  # another running process's: not touched
    # a user's own files in the output folder, outside what a run writes or of other names
    users = [out / "notes" / ".draft.tmp", out / ".notes.tmp",
             out / "thesis" / f".chapter1.old-{DEAD_PID}" / "draft.tex"]
    try:
        for p in (tmp, staged, dead / "slice_0001.dcm", alive / "slice_0001.dcm", *users):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"partial")
        _aged(tmp, staged, *staged.parents[:4], dead, alive, *users, users[2].parent)
        assert run_pipeline(config(), [str(inp)], out, progress=False) == 0
        assert not tmp.exists() and not (out / ".staging").exists()
        assert not dead.exists() and alive.is_dir()
        assert all(p.exists() for p in users)  # was: all three deleted by every plain run
    finally:
        child.kill()
        child.wait()


def test_simulate_removes_the_temporary_files_of_a_killed_simulation(tmp_path):
    from mrirecon.cli import main

    out = tmp_path / "sim"
    out.mkdir()
    orphan = out / ".file_brain_AXT1_sim0_0000.h5.3pfpjmed.h5.tmp"
    mine = out / ".notes.tmp"  # not a temporary file of mrirecon's: kept
    orphan.write_bytes(b"partial")
    mine.write_text("x")
    _aged(orphan, mine)
    assert main(["simulate", "mri", "--out", str(out), "--volumes", "1", "--slices", "1",
                 "--coils", "2", "--size", "16", "16", "--template-resolution", "2"]) == 0
    assert not orphan.exists() and mine.exists()


def test_train_resume_removes_the_temporary_files_of_a_killed_run(tmp_path, monkeypatch):
    from mrirecon.training import trainer

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    orphan = ckpt / ".last.pt.ab_d3fgh.pt.tmp"
    orphan.write_bytes(b"partial")
    _aged(orphan)

    class Bare:  # the attributes resume() reads before it looks for a checkpoint
        rank, out, checkpoint_path = 0, tmp_path, ckpt / "last.pt"

    assert trainer.Trainer.resume(Bare()) is False
    assert not orphan.exists()


# -- F8 --------------------------------------------------------------------------------------------

def test_bench_rerun_says_it_reused_finished_entries(mri_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mri_file, data / "file_brain_AXT1_0.h5")
    args = ["bench", "--data", str(data), "--output", str(tmp_path / "b"), "--methods",
            "zero_filled", "--accelerations", "4", "--no-progress", "--set",
            "calibrate.method=walsh"]
    for _ in range(2):
        p = _sh([sys.executable, "-m", "mrirecon.cli", *args], tmp_path)
        assert p.returncode == 0, p.stderr
    assert "finished (method, volume) entries reused" in p.stderr


DEAD_PID = 4_999_999  # above Linux's largest pid_max (2**22): never a live process


def test_only_hidden_old_pid_folders_and_old_staging_are_leftovers(tmp_path):
    """A commit moves an output aside as ``.NAME.old-PID`` (hidden): a user's ``dicom/vol.old-PID``
    (not hidden) is not a writer's name and stays, though its PID is dead. A staging folder made
    after this run began (another run's, on a file system without locks) stays too."""
    out = tmp_path / "out"
    ours = out / "dicom" / f".vol.old-{DEAD_PID}" / "slice_0001.dcm"
    users = out / "dicom" / f"vol.old-{DEAD_PID}" / "slice_0001.dcm"
    old_stage = out / ".staging" / f"0-{DEAD_PID}" / "x"
    for p in (ours, users, old_stage):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    _aged(ours.parent, users.parent, old_stage.parent)
    start = time.time()
    new_stage = out / ".staging" / f"0-{os.getpid() + 1}"
    new_stage.mkdir()
    os.utime(new_stage, (start + 5, start + 5))
    assert remove_orphans(out, before=start) == 2
    assert not ours.parent.exists() and not old_stage.parent.exists()
    assert users.is_file() and new_stage.is_dir()
