"""The lock of an output folder: ``mrirecon run`` (plain, or each rank of a distributed job),
``mrirecon bench`` and ``mrirecon train`` take it before they write into a folder, so that two
processes never write into one folder at once (their outputs, run files and logs mixed).

:func:`lock_output` is what :mod:`mrirecon.pipeline.runner` takes (re-exported by
:mod:`mrirecon.pipeline.run_state`); :func:`locked_output` the same lock as a context manager for
a process that writes into its folder alone. It lives here, below ``training`` (which must not
import ``pipeline``), so that one lock serves every command.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from pathlib import Path


class OutputLock:
    """The lock files a run holds (:func:`lock_output`); ``close()`` releases them. ``names``:
    the lock files it made in the folder (a refused run into a folder it created removes them)."""

    def __init__(self, handles: list, extra: tuple[str, ...] = ()) -> None:
        self.handles = handles
        self.names = {Path(fh.name).name for fh in handles} | set(extra)

    def close(self) -> None:
        for fh in reversed(self.handles):
            fh.close()


def _flock(path: Path, mode: int, output: Path, option: str = "--output"):
    """``path`` opened and locked with ``mode`` (``fcntl.LOCK_EX`` / ``LOCK_SH``), or the refusal
    naming the run that holds it (the first line of ``path``)."""
    fh = open(path, "a+")  # noqa: SIM115 (held open for the run)
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): unlocked, as before
        return fh
    try:
        fcntl.flock(fh.fileno(), mode | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        holder = path.read_text().strip().split("\n")[0] if path.is_file() else ""
        raise ValueError(_refusal(output, holder or "a distributed run", option)) from None
    return fh


def _refusal(output: Path, holder: str, option: str) -> str:
    return (f"{option} {output}: another mrirecon run ({holder}) is writing into this folder; "
            f"wait for it to finish or pass another {option}")


def job_identity(world: int, config_sha: str = "") -> str:
    """What tells the ranks of one distributed job from those of another: the world size, the
    launcher's job identity where set (``TORCHELASTIC_RUN_ID``: torchrun's ``--rdzv-id``, a fresh
    one per ``--standalone`` job; ``SLURM_JOB_ID``; ``MASTER_ADDR:MASTER_PORT``), and the
    checksum of the effective config (``config_sha``). Without a launcher's identity, a new job of
    the same world size and config is taken for the old one (see :func:`lock_output`)."""
    env = os.environ.get
    parts = [f"world size {world}"]
    parts += [f"{v}={env(v)}" for v in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID") if env(v)]
    if env("MASTER_ADDR") and env("MASTER_PORT"):
        parts.append(f"MASTER_ADDR:MASTER_PORT={env('MASTER_ADDR')}:{env('MASTER_PORT')}")
    return ", ".join(parts + ([f"config {config_sha[:12]}"] if config_sha else []))


def _ranks_held(output: Path, rank: int) -> list[tuple[str, str, str]]:
    """``(rank file, its holder, its job identity)`` of the other ranks' lock files held now
    (tried with a shared lock, released at once; a file no process holds is a finished run's)."""
    import fcntl

    held = []
    for path in sorted(output.glob(".lock.rank*")):
        if path.name == f".lock.rank{rank}" or not path.name[10:].isdigit():
            continue
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # not held
            except OSError:
                fh.seek(0)
                lines = fh.read().strip().split("\n")
        held.append((path.name, lines[0], lines[1] if len(lines) > 1 else "an unknown job"))
    return held


def _join_gate(output: Path, option: str, timeout: float = 60.0):
    """``.lock.join`` locked exclusively: the ranks of distributed jobs check who holds the
    folder and take their locks one at a time (a few milliseconds each)."""
    import fcntl
    import time

    fh = open(output / ".lock.join", "a+")  # noqa: SIM115 (closed by the caller)
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except OSError:
            if time.monotonic() > end:
                fh.close()
                raise ValueError(_refusal(output, f"a process holding {output / '.lock.join'} for "
                                          f"over {timeout:.0f} s", option)) from None
            time.sleep(0.02)


def lock_output(output: Path, rank: int, world: int = 1, *, job: str = "",
                option: str = "--output", who: str = "") -> OutputLock:
    """Locks on ``output`` for this run (rank): two runs writing into one folder mixed their
    outputs, ``provenance.json`` and ``metrics.csv`` (a report with one run's metrics beside the
    other's images). A plain run (and ``mrirecon bench``, ``mrirecon train``: ``option`` names
    their folder's setting, ``who`` the command in the holder's line) holds ``.lock``
    exclusively; each rank of a distributed run holds ``.lock.rank<r>`` exclusively and
    ``.lock`` shared, so the ranks of one job run together while a plain run and a distributed
    one refuse each other (rank 1 of a job beside a plain run took only ``.lock.rank1``, and
    both wrote into the folder with exit 0).

    A rank also writes its job's identity (:func:`job_identity` of ``world`` and ``job``, the
    config's checksum) into its file and joins only when every rank holding the folder has the
    same (checked and taken under ``.lock.join``): rank 2 of a 3-rank job beside ranks 0 and 1 of
    a 2-rank one joined, each job's metrics describing the other's images, and rank 0 deleted
    the other job's rank files. A straggler rank of a finished job and a new job are told apart
    by the launcher's identity (torchrun's run id, Slurm's job id, the master's address and
    port) or another config; without them a new job of the same world size and config joins
    beside it, and only its rank of the straggler's number is refused. Released when closed, or
    when the process dies."""
    try:
        import fcntl
        exclusive, shared = fcntl.LOCK_EX, fcntl.LOCK_SH
    except ImportError:  # no POSIX locks (Windows): unlocked, as before
        exclusive = shared = 0
    me = f"pid {os.getpid()} on {platform.node()}" + (f", {who}" if who else "") + "\n"
    if world == 1:
        made = () if (output / ".lock").exists() else (output / ".lock",)
        fh = _flock(output / ".lock", exclusive, output, option)
        _holder([(fh, me)], [fh], made)
        return OutputLock([fh])
    ident = job_identity(world, job)
    gate = _join_gate(output, option) if exclusive else open(os.devnull)  # noqa: SIM115
    try:
        other = [h for h in (_ranks_held(output, rank) if exclusive else [])
                 if h[2] != ident]
        if other:
            name, holder, theirs = other[0]
            raise ValueError(_refusal(output, f"{holder}: rank {name[10:]} of another distributed "
                                      f"job ({theirs}; this one: {ident})", option))
        mine = output / f".lock.rank{rank}"
        made = () if mine.exists() else (mine,)  # .lock stays: other ranks may hold it
        own = _flock(mine, exclusive, output, option)
        try:
            common = _flock(output / ".lock", shared, output, option)
        except ValueError:
            own.close()
            raise
        writes = [(own, me + ident + "\n")] + (
            [(common, f"a distributed run: rank 0 {me}")] if rank == 0 else [])
        _holder(writes, [common, own], made)
    finally:
        gate.close()
    return OutputLock([common, own], (".lock.join",))


def locked_output(output: Path, *, option: str = "--output", who: str = "",
                  prepare: Callable[[Path], None] | None = None, rank: int = 0, world: int = 1,
                  job: str = ""):
    """A context manager: ``output`` created (``prepare``: a check that also creates it, e.g.
    ``runner.check_output``) and locked (:func:`lock_output`: by a process that writes into it
    alone, ``mrirecon bench`` and rank 0 of ``mrirecon train``, or by rank ``rank`` of a
    ``world``-process ``mrirecon run`` job ``job``); a process that fails before it wrote
    anything there leaves no folder it created."""
    from contextlib import contextmanager

    @contextmanager
    def held():
        created = not output.exists()
        try:
            if prepare is not None:
                prepare(output)
            else:
                output.mkdir(parents=True, exist_ok=True)
            lock = lock_output(output, rank, world, job=job, option=option, who=who)
        except BaseException:  # refused, or a full disk: no folder left behind
            with contextlib.suppress(OSError):
                if created:
                    output.rmdir()  # only when empty: the lock removed its own file
            raise
        try:
            yield lock
        except BaseException:
            if created and output.is_dir() and all(p.name in lock.names for p in output.iterdir()):
                for name in lock.names:
                    (output / name).unlink(missing_ok=True)
                output.rmdir()
            raise
        finally:
            lock.close()

    return held()


def _holder(writes: list, handles: list, made: tuple[Path, ...] = ()) -> None:
    """Write who holds each lock file (``writes``: ``(file, text)``); on a failure (a full disk:
    "[Errno 28] No space left on device" naming no file) the locks are released, the lock files
    this run made (``made``) removed, and the error names the lock file. The text is written
    with ``os.write``, unbuffered: a buffered write left the text in the buffer, and closing the
    handle flushed it again, whose second, unnamed ``OSError`` escaped first."""
    for fh, text in writes:
        try:
            fd = fh.fileno()
            os.ftruncate(fd, 0)
            data = text.encode()
            while data:  # opened for appending: each write goes to the (new) end
                data = data[os.write(fd, data):]
        except OSError as e:
            for path in made:
                path.unlink(missing_ok=True)
            for h in handles:
                with contextlib.suppress(OSError):
                    h.close()
            raise OSError(e.errno, f"{fh.name}: {e.strerror or e}") from e
