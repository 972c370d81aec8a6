"""The standard output of the ``mrirecon`` commands (:func:`mrirecon.cli.main` wraps it): a
reader that went away (``| head``) ends a command quietly, and a write that fails otherwise (a
full disk) names ``stdout``; their last line on standard error, which a hung-up terminal
fails."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


class StdoutClosed(Exception):
    """The reader of the standard output went away (``mrirecon simulate ... | head -1``)."""


class NamedStdout:
    """``sys.stdout`` while :func:`mrirecon.cli.main` runs: a write that fails names the standard output
    (``"stdout: No space left on device"`` for ``> /dev/full``, which named no file), and a
    closed pipe is :class:`StdoutClosed`, which ``main`` ends quietly, as Unix tools do
    (``| head`` gave "internal error: BrokenPipeError ... report it", exit 1, after the data
    were written). Everything else is the wrapped stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._failed: OSError | None = None

    def _named(self, call, *args):
        import errno

        try:
            return call(*args)
        except OSError as err:
            if isinstance(err, BrokenPipeError) or err.errno == errno.EPIPE:
                raise StdoutClosed() from None
            self._failed = OSError(err.errno, err.strerror or str(err), "stdout")
            raise self._failed from None

    def write(self, text: str) -> int:
        try:
            return self._named(self._stream.write, text)
        except UnicodeEncodeError:  # a non-UTF-8 locale (LC_ALL=C): the tables' "±" failed a
            # finished bench with exit 2; ASCII stand-ins, "?" for anything else
            enc = getattr(self._stream, "encoding", None) or "ascii"
            plain = text.translate(ASCII_STANDINS).encode(enc, "replace").decode(enc)
            return self._named(self._stream.write, plain)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flushes the stream; a write that failed since the last flush fails it again: argparse
        swallows the OSError of ``--help`` / ``--version`` (``> /dev/full`` exited 0)."""
        failed, self._failed = self._failed, None
        self._named(self._stream.flush)
        if failed is not None:
            raise failed

    def __getattr__(self, attr: str):
        return getattr(self._stream, attr)


#: What the standard output writes for the non-ASCII characters of mrirecon's tables where its
#: encoding has none of them
ASCII_STANDINS = str.maketrans({"±": "+/-", "×": "x", "≥": ">=", "≤": "<=", "–": "-", "—": "-",
                                "…": "...", "µ": "u", "°": " deg"})


class BarSafeHandler(logging.StreamHandler):
    """The commands' log handler: a record logged while progress bars are on the terminal is
    written with tqdm's external write mode (the bars cleared, the line written, the bars drawn
    again below it); a plain ``StreamHandler`` wrote it after the inner bar's cursor-up escape,
    so it began at the end of the outer bar's line ("...0/2 [00:00<?, ?file/s]I" / "NFO
    mrirecon.pipeline: ...")."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm.std")
        if not getattr(getattr(tqdm, "tqdm", None), "_instances", None):
            return super().emit(record)
        try:
            with tqdm.tqdm.external_write_mode(file=self.stream):
                super().emit(record)
        except Exception:  # noqa: BLE001 (a bar's state: the record matters more)
            super().emit(record)


def ensure_stderr() -> None:
    """Standard error closed (``2>&-``): messages go nowhere, not to the standard output, which
    ``print(..., file=None)`` writes to and scripts read (``simulate``'s file list got the
    error line)."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the process's)


def bars_fit(stream) -> bool:
    """Whether progress bars can be drawn on ``stream``: a terminal (not a file: nohup, Slurm),
    and not ``TERM=dumb`` (an Emacs shell, a CI pseudo-terminal), which shows the bars'
    cursor-up escapes as ``^[[A``."""
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def stdout_to_devnull(stream) -> None:
    """Point the standard output's descriptor at ``os.devnull``, so that the interpreter's
    last flush of what is still buffered for the closed pipe does not print "Exception ignored
    ... BrokenPipeError"."""
    with contextlib.suppress(Exception):  # no descriptor (a test's capture): nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def end_progress_bars() -> None:
    """Close the progress bars still on the terminal before a message, so that it starts on a
    line of its own (it was glued to the end of the bar's line)."""
    tqdm = sys.modules.get("tqdm.std")
    bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ())
    for bar in bars:
        with contextlib.suppress(Exception):  # a message matters more than a bar
            bar.close()
    if bars:
        sys.stderr.flush()


def last_words(line: str) -> None:
    """``line`` on standard error, on a line of its own, as a command ends on a signal. A
    terminal that hung up (SIGHUP: the ssh session or its window closed) fails every write with
    EIO; then the exit status alone tells (the ``OSError`` raised in the handler made it 1 and a
    traceback instead of 129)."""
    with contextlib.suppress(OSError):
        end_progress_bars()
        print(line, file=sys.stderr)
