"""The one error type raised by the readers in :mod:`mrirecon.io` for malformed input, and the
words for what is no fault of the data: a full (or read-only) disk, a termination signal."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

#: What to do about an ``OSError`` of a write that is the file system's, not the program's.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full: free space there (or write to another location) and run again",
    errno.EDQUOT: "the disk quota is exceeded: free space there (or write to another location) "
                  "and run again",
    errno.EROFS: "the file system is read-only: write to another location",
    errno.EFBIG: "the file outgrows the largest this process or file system allows, a limit "
                 "set by ulimit -f or FAT32's 4 GiB: raise the limit or write to another location",
}


#: What torch's collectives say when a peer process is gone (killed, crashed, its node lost)
PEER_GONE = ("gloo/transport", "Connection reset by peer", "Connection closed by peer",
             "NCCL communicator was aborted", "Broken pipe")


def lost_peer(err: BaseException) -> str | None:
    """The one line for a collective of a distributed run (``WORLD_SIZE`` > 1) that failed
    because a peer process is gone, ``None`` for anything else: it was "internal error:
    RuntimeError: [.../gloo/transport/tcp/pair.cc:537] Read error ...: Connection reset by peer
    ... (report it)", a bug report asked for a rank killed by its scheduler."""
    text = str(err)
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world < 2 or not isinstance(err, RuntimeError) or not any(m in text for m in PEER_GONE):
        return None
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(err).__name__
    return (f"error: another process of this {world}-process run stopped (killed, crashed or "
            f"disconnected: {first}), so this one stops too; check the other ranks' logs, then "
            "start all of them again with --resume (train: from the last checkpoint; run: the "
            "finished inputs are kept)")


def disk_error(err: BaseException) -> str | None:
    """One line for an ``OSError`` of a full disk, an exceeded quota, a file-size limit or a
    read-only file system (``"OUT/metrics.csv: No space left on device (the disk is full:
    ...)"``), naming the file
    when the error does; ``None`` for any other error. These are the user's to fix, not internal
    errors (``mrirecon`` said "internal error: OSError: [Errno 28] ..." naming no file)."""
    if not isinstance(err, OSError) or err.errno not in DISK_ERRORS:
        return None
    why = err.strerror or os.strerror(err.errno)
    text = f"{err.filename}: {why}" if err.filename is not None and str(err.filename) not in why \
        else why
    return " ".join(f"{text} ({DISK_ERRORS[err.errno]})".split())


class Terminated(KeyboardInterrupt):
    """Raised by the command line's SIGTERM handler (a scheduler's or ``kill``'s stop), and its
    SIGHUP handler (the ssh session or terminal closed), with the signal's name (``"SIGTERM"``,
    ``"SIGHUP"``) as its text: handled as Ctrl-C is (temporary files removed, the run files
    written for what finished), then exit 143 (SIGHUP: 129). A ``KeyboardInterrupt``, so every
    ``except KeyboardInterrupt`` cleans up for it too."""


class DataFormatError(ValueError):
    """A file does not hold what its format promises.

    Parameters
    ----------
    file
        Path (or a description such as ``"<xml string>"``) of the offending input.
    field
        Dataset, attribute or XML element at fault (e.g. ``"kspace"``,
        ``"ismrmrd_header/encoding/encodedSpace/matrixSize/x"``).
    problem
        What is wrong, ideally with the expected and the given values.

    The message reads ``"<file>: <field>: <problem>"`` so that both names are always in it.
    """

    def __init__(self, file: str | os.PathLike, field: str, problem: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.file}: {field}: {problem}")

    def __reduce__(self):  # keep the three arguments across pickling (DataLoader workers)
        return (type(self), (self.file, self.field, self.problem))


class DataWarning(UserWarning):
    """A reader's warning: the file was read, but something in it may make the result wrong
    (bits above HighBit, images left out). Named like :class:`DataFormatError`: the message
    reads ``"<file>: <field>: <problem>"``; ``kind`` is a short key for the record
    (``mrirecon run`` says each kind once per input). Readers emit it with :func:`warn_data`,
    which :func:`collect_data_warnings` can gather per thread."""

    def __init__(self, file: str | os.PathLike, field: str, problem: str,
                 kind: str = "data") -> None:
        self.file, self.field, self.problem, self.kind = str(file), field, problem, kind
        super().__init__(f"{self.file}: {field}: {problem}")

    def __reduce__(self):
        return (type(self), (self.file, self.field, self.problem, self.kind))


class DataNote(DataWarning):
    """What a reader did to the data that is no fault of the file (padding read as air, a
    lossy-compressed source): a note in ``mrirecon run``'s record, a warning of this category
    for a library caller (``warnings.simplefilter("ignore", DataNote)`` silences it)."""


#: The one lock of mrirecon's blocks that silence warnings with ``warnings.catch_warnings``
#: (only where no per-call switch exists: pydicom's parser of bare data sets and subfolder
#: headers, deprecated parameter names of a recorded config): such blocks run one at a time,
#: so each restores the filters it found (overlapping blocks in two threads left an "ignore"
#: filter installed for good). :func:`warn_data` warns under it too, so no such block of
#: another thread silences a data warning.
_QUIET_LOCK = threading.RLock()


#: The list a :func:`collect_data_warnings` block of this thread (context) gathers into, or
#: ``None``: a context variable, not ``warnings.catch_warnings(record=True)``, which swaps the
#: process-wide filters and display function and is not thread-safe (two DICOM reads in two
#: threads left every later warning of the process appended to a dead list).
_COLLECTOR: contextvars.ContextVar[list[warnings.WarningMessage] | None] = contextvars.ContextVar(
    "mrirecon_data_warnings", default=None)


def warn_data(warning: DataWarning, stacklevel: int = 1) -> None:
    """Emit a reader's :class:`DataWarning` (or :class:`DataNote`): appended to the collector
    of the current thread's :func:`collect_data_warnings` block when one is active (the process'
    filters and display are not consulted), else ``warnings.warn(warning, stacklevel=...)``
    with ``stacklevel`` counted from the caller of this function, as ``warnings.warn``'s."""
    sink = _COLLECTOR.get()
    if sink is None:
        with _QUIET_LOCK:  # never while another thread's quiet_warnings block ignores all
            warnings.warn(warning, stacklevel=stacklevel + 1)
        return
    try:
        frame = sys._getframe(stacklevel)  # where warnings.warn(stacklevel) would point
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
    except ValueError:  # fewer frames than that: as warnings.warn says it
        filename, lineno = "sys", 1
    sink.append(warnings.WarningMessage(warning, type(warning), filename, lineno))


@contextlib.contextmanager
def collect_data_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Gather the :class:`DataWarning` s that :func:`warn_data` emits in this block, in this
    thread (context) only, into the list it yields (``warnings.WarningMessage`` entries, with
    where each would have been shown); other warnings, and other threads' data warnings, are
    emitted as usual. Blocks nest (the innermost gathers). The process-wide warning state is
    not touched, so reads in several threads at once are safe."""
    sink: list[warnings.WarningMessage] = []
    token = _COLLECTOR.set(sink)
    try:
        yield sink
    finally:
        _COLLECTOR.reset(token)


@contextlib.contextmanager
def quiet_warnings(category: type[Warning] = Warning) -> Iterator[None]:
    """Ignore warnings of ``category`` in this block, under :data:`_QUIET_LOCK`.

    ``warnings.catch_warnings`` swaps the process-wide filter list, which is not thread-safe:
    the lock makes mrirecon's own blocks take turns, so the filters are always restored, and
    :func:`warn_data` waits for it, so a data warning is never silenced by another thread's
    block. Any other warning another thread emits while a block runs (a pydicom parse:
    milliseconds) is subject to its filter, and a caller's own ``catch_warnings`` in another
    thread is not serialised (Python < 3.14 has no thread-local warning filters)."""
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


#: Where the cgroup file systems are mounted, and the file listing this process's cgroups: the
#: memory limit of a container (Docker ``--memory``, Kubernetes limits, Slurm's cgroup plugin)
#: is read from them (module constants so that a test can point them at a fake tree).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
#: A cgroup memory limit at or above this is no limit (cgroup v1 reports "none" as
#: 9223372036854771712 bytes; v2 writes ``max``).
NO_CGROUP_LIMIT = 1 << 62


def _cgroup_paths(proc: Path) -> tuple[str, str]:
    """This process's cgroup v2 path and cgroup v1 ``memory`` path (``"/"`` when not listed)."""
    unified = memory = "/"
    try:
        lines = proc.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return unified, memory
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        elif "memory" in parts[1].split(","):
            memory = parts[2]
    return unified, memory


def _limit_files(base: Path, cgroup: str, name: str):
    """``name`` in the cgroup ``cgroup`` under ``base`` and in each cgroup above it, up to
    ``base`` itself (a parent's limit binds its children; inside a container the listed path
    may not exist, its own cgroup being the mount's root)."""
    parts = [p for p in cgroup.strip().split("/") if p not in ("", ".", "..")]
    for depth in range(len(parts), -1, -1):
        yield base.joinpath(*parts[:depth], name)


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < NO_CGROUP_LIMIT else None


def cgroup_memory_limit(root: str | os.PathLike | None = None,
                        proc: str | os.PathLike | None = None) -> int | None:
    """Bytes of memory this process's cgroup may use, or ``None`` without a limit.

    The smallest of cgroup v2 ``memory.max`` and cgroup v1 ``memory/memory.limit_in_bytes`` of
    the process's cgroups (``proc``: ``/proc/self/cgroup``) and of the cgroups above them under
    ``root`` (default :data:`CGROUP_ROOT`); ``max`` and values of :data:`NO_CGROUP_LIMIT` or
    more are no limit, unreadable files none either."""
    root = CGROUP_ROOT if root is None else Path(root)
    unified, memory = _cgroup_paths(PROC_SELF_CGROUP if proc is None else Path(proc))
    limits = [limit for path in (*_limit_files(root, unified, "memory.max"),
                                 *_limit_files(root / "memory", memory, "memory.limit_in_bytes"))
              if (limit := _read_limit(path)) is not None]
    return min(limits) if limits else None


def memory_bytes() -> int:
    """Bytes of memory this process may use: the RAM (64 GiB if the system does not say), or
    the cgroup's memory limit when smaller (:func:`cgroup_memory_limit`: a container or a Slurm
    job is killed at its limit, not at the machine's RAM). The readers refuse a declared size
    above a quarter of it before reading anything (a corrupt or hostile shape); the volume,
    simulation and cache budgets are fractions of it too."""
    try:
        ram = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        ram = None
    limit = cgroup_memory_limit()
    if ram is None:
        return limit if limit is not None else 1 << 36
    return ram if limit is None else min(ram, limit)


def refuse_oversized(path: str | os.PathLike, field: str, nbytes: float, what: str) -> None:
    """A :class:`DataFormatError` naming ``field`` when ``what`` (e.g. "a (2, 60000, 60000)
    float32 reference") would need more than a quarter of the RAM: a 300-KiB file declaring
    one raised "MemoryError: Unable to allocate 13.4 GiB", naming nothing."""
    if nbytes > memory_bytes() / 4:
        raise DataFormatError(path, field, f"{what} would need {nbytes / 2**30:.1f} GiB, more "
                              f"than a quarter of the {memory_bytes() / 2**30:.0f} GiB of memory "
                              "here; the declared size is corrupt (or the data must be split)")


def require_regular_file(path: str | os.PathLike) -> None:
    """Refuse a FIFO, socket or device before opening it (opening a FIFO blocks forever).

    A missing path is left to the caller (its ``FileNotFoundError`` names the file)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DataFormatError(path, "file", f"cannot be inspected ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        raise DataFormatError(path, "file", f"is {kind}; pass a data file")


def _file_kind(mode: int) -> str:
    """``"a file"``, ``"a folder"``, ``"a FIFO (named pipe)"``, ... for ``st_mode``."""
    import stat

    for test, kind in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a regular file"


def require_output_path(path: str | os.PathLike, what: str, *, folder: bool = False) -> None:
    """The output counterpart of :func:`require_regular_file`: ``path``, where a command writes
    ``what`` (``"mrirecon bench's results file"``), is absent or a regular file (``folder``: a
    folder), a symbolic link followed; else a ``ValueError`` naming it, before any work: "OUT/
    results.jsonl is a FIFO (named pipe), not a regular file, in the way of mrirecon bench's
    results file (opening a FIFO blocks for ever); move it away (nothing was run)". A FIFO at a
    file that is read or appended to (``results.jsonl``, ``train_log.csv``) blocked the command
    for ever holding its folder's lock; one at a file written atomically was silently replaced;
    a folder there failed the command only when it wrote (``model.pt``, after the training)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # absent (or a dangling link, which the atomic write replaces)
        return
    except OSError as err:  # a file where a folder above it should be: ENOTDIR names the path
        raise ValueError(f"{path} cannot be inspected ({err.strerror or err}), in the way of "
                         f"{what}; move what is in the way (nothing was run)") from None
    if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
        return
    blocks = " (opening a FIFO blocks for ever)" if stat.S_ISFIFO(mode) else ""
    should = "a folder" if folder else "a regular file"
    raise ValueError(f"{path} is {_file_kind(mode)}, not {should}, in the way of {what}{blocks}; "
                     "move it away (nothing was run)")


def open_hdf5(path: Path, kind: str, hint: str = ""):
    """``h5py.File(path, "r")`` for the readers: a FIFO or folder is refused first
    (:func:`require_regular_file`); a missing file (also one deleted after its folder was listed)
    is ``FileNotFoundError("PATH: no such KIND file" + hint)``, h5py's raw "[Errno 2] Unable to
    synchronously open file" otherwise; any other failure to open is a :class:`DataFormatError`
    of field ``file``, one that says so for a file another process holds open for writing
    (:func:`_open_for_write`: a conversion still writing it was called "not a readable HDF5
    file"), or on a file system without the file locks HDF5 takes."""
    import h5py

    require_regular_file(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such {kind} file{hint}") from None
        raise DataFormatError(path, "file", _open_for_write(path, err)
                              or f"not a readable HDF5 file ({err})") from None
    try:
        refuse_outside_data(h5, path)
    except BaseException:
        h5.close()
        raise
    return h5


def _open_for_write(path, err: OSError) -> str | None:
    """The problem to report when ``err`` says that another process holds ``path`` open for
    writing, else ``None``: HDF5's file lock (errno 11, "unable to lock file": a live writer;
    the lock dies with it) or the superblock's "file is already open for write" mark (a writer
    in SWMR mode, or one killed while writing a ``libver="latest"`` file: the mark stays).

    A lock that fails with another errno (the one in HDF5's text, "errno = 37": ENOLCK of NFS
    without lockd, EOPNOTSUPP, EINVAL) is a file system without the locks HDF5 takes, no other
    process: the fix ``HDF5_USE_FILE_LOCKING=FALSE`` and h5py's text are reported (its
    ``BEST_EFFORT`` ignores ENOSYS only, these fail the same way)."""
    text = str(err)
    if "unable to lock file" in text:
        found = re.search(r"errno = (\d+)", text)
        code = int(found.group(1)) if found else err.errno
    else:
        code = err.errno
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return ("is open for writing in another process (HDF5 file lock): run again once that "
                "process has closed it; HDF5_USE_FILE_LOCKING=FALSE reads it anyway (a file "
                "mid-write may be incomplete or inconsistent)")
    if "unable to lock file" in text:
        return ("cannot be opened: the file system here does not support the file locks HDF5 "
                "takes (NFS without lockd, some parallel or FUSE file systems); set "
                f"HDF5_USE_FILE_LOCKING=FALSE to read it without locking ({text})")
    if "already open for write" in text:
        return ("is open for writing in another process, or its writer was killed (HDF5's "
                "consistency flags): run again once that process has closed it; if no process "
                f"writes it, `h5clear -s {path}` clears the flags (check that the data are "
                "complete)")
    return None


def hdf5_dataset(h5, path: str | os.PathLike, key: str, *, required: bool = True):
    """The dataset ``key`` of the open HDF5 file ``h5`` (at ``path``): the one check of every
    dataset the fastMRI and LoDoPaB readers read. A missing one is ``None`` unless ``required``
    (then a :class:`DataFormatError` "dataset missing (found [...])"); a group or a named
    datatype stored under that name is a :class:`DataFormatError` "is a group, expected a
    dataset" (``reconstruction_rss`` stored as a group raised "AttributeError: 'Group' object
    has no attribute 'ndim'", naming neither; a ``mask`` or header group "corrupt or unreadable
    (TypeError: Accessing a group is done with bytes or str ...)"); one compressed with a filter
    this HDF5 lacks is refused by :func:`refuse_unavailable_filters`."""
    import h5py

    if key not in h5:
        if not required:
            return None
        raise DataFormatError(path, key, f"dataset missing (found {sorted(h5.keys())})")
    obj = h5[key]
    if not isinstance(obj, h5py.Dataset):
        kind = "a group" if isinstance(obj, h5py.Group) else f"a {type(obj).__name__}"
        raise DataFormatError(path, key, f"is {kind}, expected a dataset")
    refuse_unavailable_filters(path, key, obj)
    return obj


#: Registered HDF5 filter ids other writers compress with (hdf5plugin decodes all but LZO);
#: a file stores the name only when the writer chose to, often as a long string with a URL.
FILTER_NAMES = {305: "lzo", 307: "bzip2", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle",
                32013: "zfp", 32015: "zstd", 32017: "sz", 32018: "fcidecomp", 32024: "sz3",
                32026: "blosc2", 32028: "sperr"}


def _unavailable_filters(ds) -> list[tuple[int, str]]:
    """``(id, name)`` of each filter of ``ds``'s pipeline that this HDF5 cannot apply (whatever
    its flags: an optional filter was applied to every chunk its writer could compress)."""
    import h5py

    dcpl, missing = ds.id.get_create_plist(), []
    for i in range(dcpl.get_nfilters()):
        code, _flags, _values, name = dcpl.get_filter(i)
        if not h5py.h5z.filter_avail(code):  # also loads a plugin from HDF5_PLUGIN_PATH
            stored = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            missing.append((int(code), FILTER_NAMES.get(int(code))
                            or stored.split(";")[0].strip() or "an unnamed filter"))
    return missing


def refuse_unavailable_filters(path: str | os.PathLike, field: str, ds) -> None:
    """Refuse the dataset ``ds`` (``field`` of ``path``) when it is compressed with a filter
    this Python's HDF5 cannot decode (blosc, zstd, lz4, bitshuffle, ... of hdf5plugin or
    h5py's ``compression=32015``): "PATH: kspace: compressed with zstd (HDF5 filter 32015),
    which this Python's HDF5 cannot decode: pip install hdf5plugin ...". hdf5plugin is
    imported (once installed) before refusing: it registers its filters with h5py's HDF5, and
    a plugin folder in ``HDF5_PLUGIN_PATH`` is searched too. Was: the file opened, then the first
    read failed "kspace[0]: unreadable (Can't synchronously read data (can't open directory
    (/usr/local/lib/plugin) ...))", naming neither the filter nor a fix."""
    missing = _unavailable_filters(ds)
    if not missing:
        return
    note = ""
    try:
        import hdf5plugin  # noqa: F401  (optional: registers its filters when imported)
    except ImportError:
        pass
    except Exception as err:  # installed but broken (its compiled plugins fail to load)
        note = f" (hdf5plugin is installed but failed to import: {type(err).__name__}: {err})"
    else:
        missing = _unavailable_filters(ds)
        note = " (hdf5plugin is installed but has no such filter)"
    if missing:
        names = ", ".join(f"{name} (HDF5 filter {code})" for code, name in missing)
        raise DataFormatError(path, field, (
            f"compressed with {names}, which this Python's HDF5 cannot decode{note}: pip install "
            "hdf5plugin (mrirecon loads it when installed), or set HDF5_PLUGIN_PATH to the "
            "folder of the filter's HDF5 plugin before starting, or decompress the file where "
            "the filter is installed (h5repack -f NONE IN OUT)"))


def one_string(path: str | os.PathLike, field: str, raw):
    """The one string (``bytes`` or ``str``) of a header dataset's value ``raw`` (``ds[()]``):
    stored as a scalar or as a 1-element array, fixed-length or variable-length; any other
    shape or type is a :class:`DataFormatError` naming ``field``."""
    import numpy as np

    if isinstance(raw, np.ndarray):
        if raw.size != 1:
            raise DataFormatError(path, field, f"expected one string, got shape {raw.shape}")
        raw = raw.reshape(-1)[0]
    if not isinstance(raw, (bytes, str)):
        raise DataFormatError(path, field, f"expected an XML string, got {type(raw).__name__}")
    return raw


def refuse_outside_data(h5, path: str | os.PathLike) -> None:
    """Refuse an HDF5 file any of whose objects keeps its data outside the file: an external
    link, a virtual dataset mapping other files, external raw storage. h5py follows them
    without a word, so a 1-KiB ``kspace`` link read another file (or ``/etc/passwd`` as raw
    storage, or a FIFO that hung the run) with exit 0, and ``provenance.json``'s checksum, which
    ``--resume`` trusts, covered only the link. Soft links inside the file are fine; one whose
    target does not exist is refused naming both (it was "file: corrupt or unreadable
    (KeyError: ... component not found)")."""
    import h5py

    def walk(group, prefix: str, depth: int, seen: list[int]) -> None:
        for name in group:
            full = f"{prefix}{name}"
            seen[0] += 1
            if seen[0] > 100_000:  # a file of this many objects is no raw-data file we read
                return
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise DataFormatError(path, full, f"is an external link to {link.filename}:"
                                      f"{link.path}: {_OUTSIDE}")
            if isinstance(link, h5py.SoftLink):  # its target, met under its own name, or none
                try:
                    target = group.get(name)
                except (KeyError, RuntimeError) as err:  # a loop of links
                    raise DataFormatError(path, full, f"is a soft link to {link.path}, which "
                                          f"cannot be followed ({err})") from None
                if target is None:  # moved or deleted: h5py said "component not found"
                    raise DataFormatError(path, full, f"is a soft link to {link.path}, which "
                                          "does not exist in this file")
                continue
            obj = group.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual and any(v.file_name != "." for v in obj.virtual_sources()):
                    files = sorted({v.file_name for v in obj.virtual_sources()})
                    raise DataFormatError(path, full, f"is a virtual dataset mapping "
                                          f"{', '.join(files[:3])}: {_OUTSIDE}")
                if obj.id.get_create_plist().get_external_count() > 0:
                    raise DataFormatError(path, full, f"keeps its bytes in external raw "
                                          f"storage: {_OUTSIDE}")
            elif isinstance(obj, h5py.Group) and depth < 16:
                walk(obj, f"{full}/", depth + 1, seen)

    try:
        walk(h5, "", 0, [0])
    except CORRUPTION_ERRORS as err:  # a damaged object header met on the way
        raise as_format_error(path, "file", err) from None


_OUTSIDE = ("its data lie outside this file, which mrirecon does not read (the checksum in "
            "provenance.json, which --resume trusts, covers this file only); copy the data into "
            "the file (h5py copy, or h5repack)")


# what h5py / pydicom / numpy raise on damaged bytes (HDF5 object headers, B-trees, filters,
# DICOM element lengths): turned into DataFormatError by the readers
CORRUPTION_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, OverflowError,
                     EOFError, UnicodeDecodeError)


def as_format_error(file: str | os.PathLike, field: str, err: BaseException) -> BaseException:
    """The exception to raise for ``err`` met while reading ``file``: ``err`` itself when it is
    already a :class:`DataFormatError` or a missing file, else a :class:`DataFormatError`."""
    if isinstance(err, (DataFormatError, FileNotFoundError)) or not isinstance(err, CORRUPTION_ERRORS):
        return err
    return DataFormatError(file, field, f"corrupt or unreadable ({type(err).__name__}: {err})")


def guard_reader(field: str):
    """Decorate a reader method of an object with a ``path``: damaged-file exceptions become
    :class:`DataFormatError` naming the path and ``field``."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except CORRUPTION_ERRORS as err:
                new = as_format_error(self.path, field, err)
                if new is err:
                    raise
                raise new from err
        return inner

    return wrap


def refuse_nonfinite(who: str, target: str | os.PathLike, field: str, values,
                     noun: str = "values") -> None:
    """A writer's check before it writes: NaN / Inf in ``values`` (an array, or ``None``) are
    refused as ``"<who>: <target>: <field> has N NaN or Inf <noun>; nothing written"`` (the
    readers refuse such files, so they are never written)."""
    import numpy as np

    bad = 0 if values is None else int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ValueError(f"{who}: {target}: {field} has {bad} NaN or Inf {noun}; nothing written")
