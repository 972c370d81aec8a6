"""The command line on odd terminals and encodings: a standard output without "±" (LC_ALL=C),
log records written while progress bars are drawn, and ``TERM=dumb``."""

from __future__ import annotations

import io
import logging
import sys

from mrirecon.cli_stdout import BarSafeHandler, NamedStdout, bars_fit


def test_an_ascii_stdout_gets_stand_ins_not_an_error():
    """A finished ``mrirecon bench`` under LC_ALL=C exited 2 ("'ascii' codec can't encode
    character '\\xb1'") after writing every file, its table never printed."""
    raw = io.BytesIO()
    out = NamedStdout(io.TextIOWrapper(raw, encoding="ascii", write_through=True))
    out.write("PSNR 30.1 ± 0.2 at 4× ≥ ∑\n")
    out.writelines(["a ± b\n"])
    assert raw.getvalue() == b"PSNR 30.1 +/- 0.2 at 4x >= ?\na +/- b\n"
    utf8 = io.BytesIO()
    wrapper = io.TextIOWrapper(utf8, encoding="utf-8", write_through=True)
    NamedStdout(wrapper).write("± ×\n")
    assert utf8.getvalue() == "± ×\n".encode()  # untouched where the encoding has them


def test_a_record_logged_under_open_bars_starts_a_line_of_its_own():
    """A plain StreamHandler wrote the record after the inner bar's cursor-up escape, at the end
    of the outer bar's line ("...0/2 [00:00<?, ?file/s]I" / "NFO mrirecon.pipeline: ...")."""
    from tqdm import tqdm

    stream = io.StringIO()
    handler = BarSafeHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    record = logging.LogRecord("mrirecon.pipeline", logging.INFO, __file__, 1, "hello", None, None)
    bar = tqdm(total=3, file=stream, desc="files", ncols=60, mininterval=0)
    try:
        bar.update(1)
        before = stream.getvalue()
        handler.emit(record)
        written = stream.getvalue()[len(before):]
    finally:
        bar.close()
    # tqdm's external write mode clears the bar's line first ("\r" + blanks + "\r"), so the record
    # begins a line, then draws the bar again below it
    head, _, tail = written.partition("INFO hello\n")
    assert _ and head.endswith("\r") and "files" in tail


def test_bars_need_a_terminal_that_is_not_dumb(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert bars_fit(Tty()) and not bars_fit(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")  # an Emacs shell: the cursor-up escapes showed as ^[[A
    assert not bars_fit(Tty())
    assert not bars_fit(None) and sys.stderr is not None


def test_a_closed_stderr_keeps_errors_off_the_standard_output(tmp_path):
    """With ``2>&-`` the error line went to the standard output, which scripts read as the
    list of files ``simulate`` wrote."""
    import os
    import shlex
    import subprocess

    from tests.helpers import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = (f"{shlex.quote(sys.executable)} -m mrirecon simulate mri --out /proc/x --volumes 1 "
           "--slices 1 --coils 2 --size 32 32 2>&-")
    proc = subprocess.run(cmd, shell=True, capture_output=False, stdout=subprocess.PIPE,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
