"""Something other than a regular file where `mrirecon bench` / `mrirecon train` write theirs.

A FIFO (named pipe) at ``results.jsonl`` blocked `bench` for ever in ``ResultsFile._read``
(``read_bytes``), and one at ``train_log.csv`` blocked `train` after its first step in
``csv_header`` (``path.open("rb")``), each holding the output folder's lock until killed. A
FIFO at a file written atomically (the bench tables, ``config.yaml``, ``checkpoints/last.pt``)
was silently replaced; a folder there failed the command only when it was written (``model.pt``
after the whole training). Now each output path is checked before any work (one rule,
``io.errors.require_output_path``): exit 2 naming the path, nothing left behind. Every command
runs in a subprocess with a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import fresh_python, tiny_modl_config, tiny_mri_folders

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")

TIMEOUT = 90  # s: the refusals take an interpreter start (about 5 s); the hang was for ever


def _mrirecon(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run([sys.executable, "-m", "mrirecon", *args], capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=cwd, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mrirecon {' '.join(args)}: still running after {TIMEOUT} s")


def _put(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    else:
        path.write_text("mine")


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("name, kind", [("results.jsonl", "fifo"), ("bench_table.csv", "fifo"),
                                        ("bench_table.md", "folder"),
                                        ("bench_volumes.csv", "fifo")])
def test_bench_refuses_an_output_that_is_not_a_regular_file(mri_file, tmp_path, name, kind):
    out = tmp_path / "out"
    _put(out / name, kind)
    before = _tree(out)
    proc = _mrirecon("--threads", "1", "bench", "--no-progress", "--data", str(mri_file.parent),
                     "--output", str(out), "--methods", "zero_filled", "--accelerations", "4",
                     cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    what = "a FIFO (named pipe)" if kind == "fifo" else "a folder"
    assert f"{out / name} is {what}, not a regular file" in proc.stderr, proc.stderr[-2000:]
    assert "nothing was run" in proc.stderr
    assert _tree(out) == before  # no lock, no records, no table left behind


@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> dict[str, Path]:
    return tiny_mri_folders(tmp_path_factory.mktemp("fifo_mri"))


@pytest.mark.parametrize("name, kind, tensorboard", [
    ("train_log.csv", "fifo", False), ("config.yaml", "fifo", False),
    ("checkpoints/last.pt", "fifo", False), ("checkpoints", "file", False),
    ("model.pt", "folder", False), ("model.yaml", "fifo", False),
    ("tensorboard", "fifo", True)])
def test_train_refuses_an_output_that_is_not_a_regular_file(mri, tmp_path, name, kind,
                                                           tensorboard):
    out = tmp_path / "out"
    _put(out / name, kind)
    before = _tree(out)
    cfg = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, tensorboard=tensorboard)
    proc = _mrirecon("--threads", "1", "train", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    what = {"fifo": "a FIFO (named pipe)", "folder": "a folder", "file": "a file"}[kind]
    should = "a folder" if name in ("checkpoints", "tensorboard") else "a regular file"
    assert f"{out / name} is {what}, not {should}" in proc.stderr, proc.stderr[-2000:]
    assert "output_dir" in proc.stderr and "nothing was run" in proc.stderr
    assert _tree(out) == before  # nothing trained, no lock, no config.yaml


def test_library_results_file_and_training_log_refuse_a_fifo(tmp_path):
    """``ResultsFile`` (the bench's store) and the trainer's CSV log, called from Python."""
    os.mkfifo(tmp_path / "results.jsonl")
    os.mkfifo(tmp_path / "train_log.csv")
    said = fresh_python(f"""
from pathlib import Path
from mrirecon.bench.table import ResultsFile
from mrirecon.training.train_log import append_csv
folder = Path({str(tmp_path)!r})
for call in (lambda: ResultsFile(folder / "results.jsonl"),
             lambda: append_csv(folder / "train_log.csv", {{"step": 1, "loss": 0.5}})):
    try:
        call()
    except ValueError as err:
        print(err)
""", timeout=TIMEOUT)
    first, second = said.splitlines()
    assert first.startswith(f"{tmp_path / 'results.jsonl'} is a FIFO (named pipe), not a regular")
    assert second.startswith(f"{tmp_path / 'train_log.csv'} is a FIFO (named pipe), not a regular")


def test_regular_outputs_of_an_earlier_run_still_resume(mri, tmp_path):
    """The check refuses only other kinds: a resumed training's regular files pass it."""
    out = tmp_path / "out"
    cfg = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, max_steps=2)
    assert _mrirecon("--threads", "1", "train", str(cfg), cwd=tmp_path).returncode == 0
    data = yaml.safe_load(cfg.read_text())
    data["optim"]["max_steps"] = 4
    cfg.write_text(yaml.safe_dump(data))
    proc = _mrirecon("--threads", "1", "train", str(cfg), "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (out / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
