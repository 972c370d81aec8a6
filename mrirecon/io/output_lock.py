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
import errno
import logging
import os
import platform
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("mrirecon.io")


class OutputLock:
    """The lock files a run holds (:func:`lock_output`); ``close()`` releases them. ``names``:
    the lock files it made in the folder (a refused run into a folder it created removes them)."""

    def __init__(self, handles: list, extra: tuple[str, ...] = ()) -> None:
        self.handles = handles
        self.names = {Path(fh.name).name for fh in handles} | set(extra)

    def close(self) -> None:
        for fh in reversed(self.handles):
            fh.close()


#: Windows (``msvcrt.locking``): where the locked bytes lie. Windows' byte-range locks are
#: mandatory (no other handle may read a locked byte), so they lie far past the holder's line,
#: which a refused run reads to name the run holding the folder. An exclusive lock takes
#: ``LOCK_SPAN`` bytes from ``LOCK_OFFSET``, a shared one (a rank's hold on ``.lock``) the one
#: byte ``LOCK_OFFSET + rank % LOCK_SPAN``: shared holds of other ranks never meet, and an
#: exclusive one meets them all (msvcrt has no shared locks). The C runtime's ``_locking``
#: takes 32-bit positions, so both stay below 2**31.
LOCK_OFFSET, LOCK_SPAN = 2**30, 2**20


#: ``flock`` errnos that mean "held by another handle": EWOULDBLOCK / EAGAIN (flock's), EACCES
#: (where ``fcntl.flock`` is emulated with ``fcntl(F_SETLK)``, and msvcrt's). Every other errno
#: says that the file system cannot lock (Lustre mounted without ``-o flock``: ENOSYS; NFS
#: without its lock daemon: ENOLCK; EOPNOTSUPP, EINVAL): :class:`LocksUnsupported`.
HELD_ERRNOS = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


class LocksUnsupported(OSError):
    """The file system of the output folder does not support the lock (``flock`` failed with
    ENOSYS, ENOLCK, EOPNOTSUPP, EINVAL ...): :func:`lock_output` then leaves the folder
    unlocked, with a warning, as where the platform has no file locks. Each of those errnos
    was taken for "held": every run, train and bench there was refused as "another mrirecon run
    (a distributed run) is writing into this folder"."""


class _Flock:
    """POSIX ``flock`` locks (Linux, macOS): released when the handle closes or the process
    dies."""

    def __init__(self, fcntl) -> None:
        self.fcntl = fcntl

    def _try(self, fh, op: int) -> bool:
        """``flock(fh, op | LOCK_NB)``: ``True`` when taken, ``False`` when another handle
        holds it (:data:`HELD_ERRNOS`); :class:`LocksUnsupported` when the file system cannot
        lock."""
        try:
            self.fcntl.flock(fh.fileno(), op | self.fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in HELD_ERRNOS:
                return False
            raise LocksUnsupported(err.errno, err.strerror or str(err), fh.name) from err
        return True

    def lock(self, fh, slot: int | None = None) -> bool:
        """Lock ``fh`` exclusively (``slot`` None) or shared (a rank's ``slot``) without
        waiting; ``False`` when another handle holds it."""
        return self._try(fh, self.fcntl.LOCK_EX if slot is None else self.fcntl.LOCK_SH)

    def held(self, fh) -> bool:
        """Whether another handle holds ``fh`` exclusively (tried shared, then released)."""
        if not self._try(fh, self.fcntl.LOCK_SH):
            return True
        self.fcntl.flock(fh.fileno(), self.fcntl.LOCK_UN)
        return False


class _Msvcrt(_Flock):
    """Windows' ``msvcrt.locking`` byte-range locks (:data:`LOCK_OFFSET`): held by the handle,
    released when it closes or the process dies; ``LK_NBLCK`` fails at once when held."""

    def __init__(self, msvcrt) -> None:
        self.msvcrt = msvcrt

    def _region(self, fh, slot: int | None, mode: int) -> bool:
        start, size = (LOCK_OFFSET, LOCK_SPAN) if slot is None else (LOCK_OFFSET + slot % LOCK_SPAN, 1)
        os.lseek(fh.fileno(), start, os.SEEK_SET)  # msvcrt locks from the current position
        try:
            self.msvcrt.locking(fh.fileno(), mode, size)
        except OSError:
            return False
        return True

    def lock(self, fh, slot: int | None = None) -> bool:
        return self._region(fh, slot, self.msvcrt.LK_NBLCK)

    def held(self, fh) -> bool:
        if not self.lock(fh):
            return True
        self._region(fh, None, self.msvcrt.LK_UNLCK)
        return False


def _locker() -> _Flock | None:
    """The file locks of this platform: ``fcntl.flock`` (POSIX), ``msvcrt.locking`` (Windows),
    or ``None`` where there are neither (the folder is then not locked, with a warning)."""
    try:
        import fcntl
    except ImportError:
        pass
    else:
        return _Flock(fcntl)
    try:
        import msvcrt
    except ImportError:
        return None
    return _Msvcrt(msvcrt)


def _open_lock_file(path: Path):
    """``path`` opened for appending (created if missing) and reading; its text is UTF-8. A
    symbolic link or anything but a regular file there is refused, never opened through: the
    holder's line truncates the file, and a link planted at ``OUT/.lock`` by anyone who can
    write into the folder made the run wipe the file it pointed to (exit 0)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    if path.is_symlink():  # O_NOFOLLOW's ELOOP, where the platform has no O_NOFOLLOW
        raise _not_a_lock(path, "a symbolic link")
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _not_a_lock(path, "a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock(path, "not a regular file")
    # opened by path (its name is the path, which the lock reports), on the checked descriptor
    return open(path, "a+", encoding="utf-8", errors="replace",  # noqa: SIM115 (held open)
                opener=lambda _path, _flags: fd)


def _not_a_lock(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: the output folder's lock file is {what}; mrirecon writes "
                      "through no link or special file in an output folder: remove it "
                      f"(rm {path}) and run again")


def _take(locker: _Flock | None, path: Path, output: Path, option: str = "--output",
          slot: int | None = None):
    """``path`` opened and locked (exclusively, or shared as rank ``slot``), or the refusal
    naming the run that holds it (the first line of ``path``). The refused handle is closed
    before anything else (Windows deletes no open file), and so is the handle of a file system
    that cannot lock (:class:`LocksUnsupported`, raised). A refused run keeps a ``path`` it
    created: a refusal there means that another run opened and locked it meanwhile, whose lock
    deleting the file would void (a third run would then lock a new ``.lock`` beside it)."""
    fh = _open_lock_file(path)
    try:
        if locker is None or locker.lock(fh, slot):
            return fh
    except LocksUnsupported:
        fh.close()
        raise
    fh.close()
    holder = (path.read_text(encoding="utf-8", errors="replace").strip().split("\n")[0]
              if path.is_file() else "")
    raise ValueError(_refusal(output, holder or "a distributed run", option)) from None


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


def _ranks_held(locker: _Flock, output: Path, rank: int) -> list[tuple[str, str, str]]:
    """``(rank file, its holder, its job identity)`` of the other ranks' lock files held now
    (tried with a lock, released at once; a file no process holds is a finished run's)."""
    held = []
    for path in sorted(output.glob(".lock.rank*")):
        if path.name == f".lock.rank{rank}" or not path.name[10:].isdigit():
            continue
        with _open_lock_file(path) as fh:
            if not locker.held(fh):
                continue
            fh.seek(0)
            lines = fh.read().strip().split("\n")
        held.append((path.name, lines[0], lines[1] if len(lines) > 1 else "an unknown job"))
    return held


def _join_gate(locker: _Flock, output: Path, option: str, timeout: float = 60.0):
    """``.lock.join`` locked exclusively: the ranks of distributed jobs check who holds the
    folder and take their locks one at a time (a few milliseconds each)."""
    import time

    fh = _open_lock_file(output / ".lock.join")
    end = time.monotonic() + timeout
    try:
        while not locker.lock(fh):
            if time.monotonic() > end:
                raise ValueError(_refusal(output, f"a process holding {output / '.lock.join'} "
                                          f"for over {timeout:.0f} s", option)) from None
            time.sleep(0.02)
    except BaseException:  # refused, a file system that cannot lock, Ctrl-C while waiting
        fh.close()
        raise
    return fh


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
    when the process dies. The locks are ``fcntl.flock`` locks (Linux, macOS), or on Windows
    ``msvcrt.locking`` byte ranges (:data:`LOCK_OFFSET`; without fcntl the folder was left
    unlocked without a word); where neither exists, or where the folder's file system does not
    support them (:class:`LocksUnsupported`: Lustre without ``-o flock``, NFS without its lock
    daemon), a WARNING says that the folder is not locked and the run goes on."""
    locker = _locker()
    if locker is None:
        log.warning("%s is not locked: this platform has neither fcntl nor msvcrt file locks, "
                       "so another run into the same folder is not refused; make sure none "
                       "writes there at the same time", output)
    from mrirecon.mpl import note_writable_folder

    note_writable_folder(output)  # matplotlib's configuration, where no other folder is writable
    # the lock files of this process alone (`.lock` of a distributed job is the ranks')
    own = [output / n for n in ([".lock"] if world == 1 else [f".lock.rank{rank}", ".lock.join"])]
    existed = [p.exists() for p in own]
    try:
        return _lock(locker, output, rank, world, job, option, who)
    except LocksUnsupported as err:
        for path, was in zip(own, existed):  # made by the try: made again (or not) below
            if not was:
                with contextlib.suppress(OSError):
                    path.unlink()
        code = errno.errorcode.get(err.errno, str(err.errno))
        log.warning("%s is not locked: its file system does not support flock (%s: %s), so "
                    "another run into the same folder is not refused; make sure none writes "
                    "there at the same time (Lustre: mount with -o flock or -o localflock; NFS: "
                    "run its lock daemon)", output, code, err.strerror)
        return _lock(None, output, rank, world, job, option, who)


def _lock(locker: _Flock | None, output: Path, rank: int, world: int, job: str, option: str,
          who: str) -> OutputLock:
    """:func:`lock_output` with ``locker`` (``None``: the lock files are written, not
    locked)."""
    me = f"pid {os.getpid()} on {platform.node()}" + (f", {who}" if who else "") + "\n"
    if world == 1:
        made = () if (output / ".lock").exists() else (output / ".lock",)
        fh = _take(locker, output / ".lock", output, option)
        _holder([(fh, me)], [fh], made)
        return OutputLock([fh])
    ident = job_identity(world, job)
    gate = _join_gate(locker, output, option) if locker else None
    try:
        other = [h for h in (_ranks_held(locker, output, rank) if locker else [])
                 if h[2] != ident]
        if other:
            name, holder, theirs = other[0]
            raise ValueError(_refusal(output, f"{holder}: rank {name[10:]} of another distributed "
                                      f"job ({theirs}; this one: {ident})", option))
        mine = output / f".lock.rank{rank}"
        made = () if mine.exists() else (mine,)  # .lock stays: other ranks may hold it
        own = _take(locker, mine, output, option)
        try:
            common = _take(locker, output / ".lock", output, option, slot=rank)
        except BaseException:  # refused, or a file system that cannot lock
            _discard([own], made)
            raise
        writes = [(own, me + ident + "\n")] + (
            [(common, f"a distributed run: rank 0 {me}")] if rank == 0 else [])
        _holder(writes, [common, own], made)
    finally:
        if gate is not None:
            gate.close()
    return OutputLock([common, own], (".lock.join",))


def locked_output(output: Path, *, option: str = "--output", who: str = "",
                  prepare: Callable[[Path], None] | None = None, rank: int = 0, world: int = 1,
                  job: str = ""):
    """A context manager: ``output`` created (``prepare``: a check that also creates it, e.g.
    ``runner.check_output``) and locked (:func:`lock_output`: by a process that writes into it
    alone, ``mrirecon bench`` and rank 0 of ``mrirecon train``, or by rank ``rank`` of a
    ``world``-process ``mrirecon run`` job ``job``); a process that fails before it wrote
    anything there leaves no folder it created: neither ``output`` nor the parents created for
    it (:func:`missing_parents`, :func:`remove_empty_folders`: ``--output a/b/c/out`` of a
    refused ``run``, ``bench`` or ``train`` left ``a/b/c``)."""
    from contextlib import contextmanager

    @contextmanager
    def held():
        made = missing_parents(output)  # deepest first; the output folder itself is the first
        try:
            if prepare is not None:
                prepare(output)
            else:
                output.mkdir(parents=True, exist_ok=True)
            lock = lock_output(output, rank, world, job=job, option=option, who=who)
        except BaseException:  # refused, or a full disk: no folder left behind
            remove_empty_folders(made)  # only empty ones: the lock removed its own file
            raise
        try:
            yield lock
        except BaseException:
            if made and output.is_dir() and all(p.name in lock.names for p in output.iterdir()):
                lock.close()  # first: Windows deletes no open file (the error became WinError 32)
                for name in lock.names:
                    (output / name).unlink(missing_ok=True)
                remove_empty_folders(made)
            raise
        finally:
            lock.close()

    return held()


def missing_parents(output: Path) -> list[Path]:
    """``output`` and its parents that do not exist yet, deepest first: the folders a command
    creates for it (``--output a/b/c/out`` makes ``a``, ``a/b``, ``a/b/c`` and ``out``)."""
    path = Path(os.path.abspath(output))
    return [p for p in (path, *path.parents) if not os.path.lexists(p)]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty: those a refused or failed
    command created (:func:`missing_parents`); one that holds anything (written meanwhile, by
    this process or another) stays, and so do the folders above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty (or not ours to remove): it and its parents stay
            return


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
            _discard(handles, made)
            raise OSError(e.errno, f"{fh.name}: {e.strerror or e}") from e


def _discard(handles: list, made: tuple[Path, ...]) -> None:
    """Release the lock ``handles`` and remove the lock files this run made (``made``): the
    handles closed first (Windows deletes no open file), neither step's failure hiding the
    error being raised."""
    for h in handles:
        with contextlib.suppress(OSError):
            h.close()
    for path in made:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
