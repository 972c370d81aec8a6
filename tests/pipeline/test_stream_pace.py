"""A long run's log shows its pace: ``mrirecon run mri_cs --set
reconstruct.params.iterations=10000000`` (a typo for 1e3, accepted) logged nothing after
"pipeline ...: 1 input(s)" for days when stderr went to a file (no progress bars there, by
design). After each input's first slice one INFO line says how long it took and what the input
will take at that pace."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mrirecon.pipeline import stream
from tests.helpers import ROOT
from tests.pipeline.test_stream import ToyModality, _methods

PACE = re.compile(r"^INFO mrirecon\.pipeline: (\S+): the first slice of (\d+) took ([0-9.e+-]+) s"
                  r"(?: \([^)]*\))?; the input ~([0-9.e+-]+) s", re.M)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    src = tmp_path_factory.mktemp("pace_src")
    (path,) = simulate_mri_dataset(src, volumes=1, slices=2, coils=2, size=(32, 24), seed=5,
                                   resolution=2)
    folder = tmp_path_factory.mktemp("pace_inputs")
    for name in ("a.h5", "b.h5"):
        shutil.copy(path, folder / name)
    return folder


def test_a_redirected_log_says_each_inputs_pace_once(two_inputs, tmp_path):
    log = tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with log.open("wb") as f:  # stderr is a file: no progress bars
        code = subprocess.run(
            [sys.executable, "-m", "mrirecon", "--threads", "1", "run", "mri_cs", "--input",
             str(two_inputs), "--output", str(tmp_path / "out"),
             "--set", "reconstruct.params.iterations=5", "--set", "export.formats=[hdf5]",
             "--set", "report.enabled=false"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=f, timeout=300).returncode
    text = log.read_text()
    assert code == 0, text[-2000:]
    found = PACE.findall(text)
    # once per input, named as the warnings name it (the path as the run lists it: two folders'
    # observation_train_000.hdf5 had read alike)
    assert sorted(name for name, *_ in found) == [str(two_inputs / "a.h5"),
                                                  str(two_inputs / "b.h5")], text
    for _, n, took, whole in found:
        assert n == "2"
        assert float(whole) == pytest.approx(2 * float(took), rel=0.01)


def test_a_single_quick_slice_says_nothing(caplog):
    """One slice that took under PACE_SECONDS: no line (the input's end follows at once)."""
    toy = ToyModality(n=1)
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        stream.stream_volume(toy, Path("one.h5"), _methods(), progress=False)
    assert not [r for r in caplog.records if "first slice of" in r.getMessage()]
    toy = ToyModality(n=3)
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        stream.stream_volume(toy, Path("three.h5"), _methods(), progress=False)
    lines = [r.getMessage() for r in caplog.records if "first slice of" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("three.h5: the first slice of 3 took "), lines


def test_a_single_slow_slice_says_its_time(caplog, monkeypatch):
    monkeypatch.setattr(stream, "PACE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        stream.stream_volume(ToyModality(n=1), Path("one.h5"), _methods(), progress=False)
    lines = [r.getMessage() for r in caplog.records if "first slice of" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("one.h5: the first slice of 1 took "), lines


def test_durations_read_in_the_largest_fitting_unit():
    assert stream.pace_line("x.h5", 3, 2.0) == "x.h5: the first slice of 3 took 2 s; the input ~6 s"
    line = stream.pace_line("x.h5", 40, 9000.0)
    assert line == "x.h5: the first slice of 40 took 9000 s (2.5 h); the input ~360000 s (4.2 days)"
