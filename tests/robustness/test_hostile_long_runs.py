"""Long unattended runs (nohup, Slurm, cron): a ``mrirecon run`` whose stderr goes to a file
wrote its tqdm bars into the log (two lines of ``\\r`` and ``ESC[A`` frames per input, 400
for 200 inputs, outnumbering the log records), and a warning logged while a bar was open
started after the bar's escapes, so ``grep '^WARNING'`` missed it. Bars are drawn only on a
terminal unless ``--progress`` asks for them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from tests.helpers import ROOT

FAST = ["--set", "reconstruct.method=zero_filled_rss", "--set", "reconstruct.params={}",
        "--set", "calibrate.method=none", "--set", "export.formats=[hdf5]",
        "--set", "report.enabled=false"]
RECORD = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def _run(inputs: Path, out: Path, stderr, *extra: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TQDM_DISABLE", None)
    return subprocess.run(
        [sys.executable, "-m", "mrirecon", "--threads", "1", "run", "mri_cs", "--input",
         str(inputs), "--output", str(out), *FAST, *extra],
        env=env, cwd=out.parent, stdout=subprocess.DEVNULL, stderr=stderr, timeout=300).returncode


@pytest.fixture(scope="module")
def inputs(mri_file, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    for name in ("a.h5", "b.h5", "c.h5"):
        shutil.copy(mri_file, folder / name)
    return folder


def test_a_log_redirected_to_a_file_holds_only_log_records(inputs, tmp_path):
    log = tmp_path / "run.log"
    with log.open("wb") as f:
        assert _run(inputs, tmp_path / "o", f) == 0
    text = log.read_bytes().decode()  # read_text would turn \r into \n
    assert "\x1b[" not in text and "\r" not in text, repr(text[:400])  # no bar frames
    lines = text.splitlines()
    assert lines and all(RECORD.match(line) for line in lines), lines[:5]
    assert any("3 of 3" in line or "a.h5" in line for line in lines)  # the run's own records

    forced = tmp_path / "forced.log"  # --progress draws them wherever stderr goes
    with forced.open("wb") as f:
        assert _run(inputs, tmp_path / "p", f, "--progress") == 0
    assert "\r" in forced.read_bytes().decode() and "file/s]" in forced.read_bytes().decode()


def _on_a_terminal(inputs: Path, out: Path, *extra: str) -> str:
    """What the run writes to stderr when that is a terminal (a pseudo-terminal of 100
    columns, read while the run writes: its buffer holds a few kB)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: the terminal has no writer left
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert _run(inputs, out, follower, *extra) == 0
    finally:
        os.close(follower)
        reader.join(timeout=30)
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_still_gets_the_bars_unless_asked_not_to(inputs, tmp_path):
    shown = _on_a_terminal(inputs, tmp_path / "o")
    assert "file/s]" in shown and "slice/s]" in shown  # the files bar and each input's slices
    hidden = _on_a_terminal(inputs, tmp_path / "n", "--no-progress")
    assert "/s]" not in hidden and "\x1b[" not in hidden
    assert "3 of 3" in hidden or "a.h5" in hidden
