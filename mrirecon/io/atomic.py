"""Atomic file writes: write to a temporary file beside the target, then rename.

A failed or interrupted write never leaves a partial file under the final name. Logs that grow
by one record at a time append it instead (:func:`append_text`), cut back when the write fails.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h5py

#: The longest file name (bytes) of the usual file systems (ext4, XFS, btrfs, NTFS, APFS).
NAME_MAX = 255
_RANDOM = 8  # random characters between prefix and suffix of a temporary name (as mkstemp)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's


def cut_name(name: str, extra: int) -> str:
    """``name`` cut (in bytes, as the file system counts) so that ``extra`` more bytes around it
    still make a file name of at most :data:`NAME_MAX` bytes; at least one byte is kept."""
    return os.fsdecode(os.fsencode(name)[:max(NAME_MAX - extra, 1)])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    On any exception the temporary file is removed and the target is left untouched.
    ``suffix`` defaults to the target's suffix (some writers infer the format from it). The
    temporary file (:func:`_new_file`) gets the mode the umask gives a new file, as ``open``
    does, and so does the target.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tail = (suffix if suffix is not None else target.suffix) + ".tmp"
    # the temporary name holds the target's, cut so that it fits where the target fits: a
    # 240-byte name failed with "File name too long" only because of these 17 bytes
    short = cut_name(target.name, len(os.fsencode(tail)) + _RANDOM + 2)
    tmp_path = _new_file(target.parent, f".{short}.", tail)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as err:
        named = _naming_target(err, target, tmp_path)  # before the unlink frees the space
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if named is None:
            raise
        named.atomic_target = target  # an enclosing atomic write passes it on as it is
        raise named from err


def _random_name() -> str:
    """:data:`_RANDOM` random characters of ``tempfile.mkstemp``'s alphabet (:data:`TEMP_NAME`)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM))


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file ``folder/PREFIX + random + SUFFIX``, created with ``O_EXCL`` (a name that
    exists, a symlink included, is never opened: the next random name is tried) and mode 0666,
    which the kernel reduces by the umask (and a default ACL) as for any new file.
    ``tempfile.mkstemp`` made it 0600, and reading the umask to widen it (``os.umask(0)`` and
    back) changed the umask of the whole process meanwhile: files other threads created in that
    window came out 0666 under umask 077 (5 of 8000 from 8 threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)  # Windows: no newline translation (as mkstemp)
    for _ in range(tempfile.TMP_MAX):
        path = folder / f"{prefix}{_random_name()}{suffix}"
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        except PermissionError:  # Windows: a folder of that name (as mkstemp)
            if os.name == "nt" and path.is_dir() and os.access(folder, os.W_OK):
                continue
            raise
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, f"no unused temporary file name {prefix}XXXXXXXX{suffix}",
                          str(folder))


def _naming_target(err: BaseException, target: Path, tmp: Path) -> OSError | None:
    """The error to raise for ``err`` met while writing ``target`` (through ``tmp``): an
    ``OSError`` of the same errno (and class) whose message names the target, as
    ``"TARGET: No space left on device"``; ``None`` to raise ``err`` itself. A disk filled up
    while writing surfaced as "[Errno 28] No space left on device" naming no file, or as the
    temporary file's name; ``torch.save`` and h5py report it as a ``RuntimeError`` or an
    ``OSError`` without errno: the errno HDF5 writes into its text (``errno = 27``) is taken
    when it is a disk error's, else ENOSPC when the target's file system has (almost) no space
    left."""
    if getattr(err, "atomic_target", None) is not None:  # named by an inner atomic write
        return None
    if isinstance(err, OSError) and err.errno is not None:
        if str(target) in str(err):
            return None
        why = err.strerror or str(err)
        if err.filename is not None and os.fspath(err.filename) not in (str(tmp), str(target)):
            why = f"{why} ({err.filename})"  # another file than the target: keep its name
        return OSError(err.errno, f"{target}: {why}")
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    # h5py states the errno of the failed write only in its text ("..., errno = 27, error
    # message = 'File too large'"): a file-size limit was "internal error: RuntimeError"
    code = _errno_in_text(str(err))
    if code is None and _no_space_left(target.parent):
        code = errno.ENOSPC
    if code is None:
        return None
    return OSError(code, f"{target}: {os.strerror(code)} "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def _errno_in_text(text: str) -> int | None:
    """The errno of a full disk, quota, file-size limit or read-only file system
    (:data:`~mrirecon.io.errors.DISK_ERRORS`) that HDF5 writes into its message as
    ``errno = 28``; ``None`` when it names none of those."""
    from mrirecon.io.errors import DISK_ERRORS

    for found in re.findall(r"errno\s*=\s*(\d+)", text):
        if int(found) in DISK_ERRORS:
            return int(found)
    return None


def _no_space_left(folder: Path) -> bool:
    """Whether the file system of ``folder`` has less than 1 MiB left for this user."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


#: The name of a temporary file of :func:`atomic_path`: ``.NAME.`` + 8 random characters (of
#: ``tempfile.mkstemp``'s alphabet) + the suffix + ``.tmp``.
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}(\.[^./]*)*\.tmp")


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file at ``folder`` or at its nearest existing parent, which keeps it from being or
    becoming a folder (``None``: the nearest existing path is a folder). Each caller words the
    refusal with its own option name, before any work ("File exists" named neither)."""
    path = Path(folder)
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def remove_temp_files(folder: str | os.PathLike, before: float, recursive: bool = False
                      ) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` (:data:`TEMP_NAME`) in ``folder``
    (and its subfolders with ``recursive``) last modified before ``before`` (a time stamp, the
    start of the calling run): files that an interrupted (killed) write left behind. Returns
    the paths removed; a file another process removes meanwhile is skipped."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    walk = os.walk(root) if recursive else [(str(root), [], [p.name for p in root.iterdir()])]
    for dirpath, _, filenames in walk:
        for f in filenames:
            p = Path(dirpath) / f
            if not TEMP_NAME.fullmatch(f):
                continue
            try:
                if p.is_symlink() or not p.is_file() or p.lstat().st_mtime >= before:
                    continue
                p.unlink()
            except OSError:
                continue
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def hdf5_image(fill: Callable[[h5py.File], object]) -> bytes:
    """The bytes of the HDF5 file that ``fill(h5)`` writes into ``h5``, built in memory (the
    image costs its size in memory, beside the arrays it is made of). Write them with
    :func:`atomic_write_bytes` or :func:`atomic_write_together`: then a full disk or a
    file-size limit is a plain ``OSError`` of Python's write naming the target. HDF5 writing the
    file itself failed inside ``H5Fclose`` there, and freeing the half-closed file's ids later
    crashed Python (segmentation fault, exit 139).

    ``BytesIO.getvalue`` hands over the buffer's bytes without a copy (CPython) and leaves no
    export behind: a ``getbuffer()`` view, which this returned before, kept the ``BytesIO``
    exported, and where a failed write's traceback collected both in one cycle Python 3.13
    printed "Exception ignored in: <_io.BytesIO …> BufferError: Existing exports of data"
    beside the clear disk error."""
    with _hdf5_in_memory() as (h5, buffer):
        fill(h5)
    return buffer.getvalue()


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """``with atomic_hdf5(path) as h5:`` an HDF5 file opened for writing, built in memory
    (:func:`hdf5_image`) and written to ``path`` atomically when the block ends without an
    exception (nothing is written when it raises)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as atomic_path: before the work
    with _hdf5_in_memory() as (h5, buffer):
        yield h5
    atomic_write_bytes(path, buffer.getvalue())  # bytes, not a view (hdf5_image says why)


@contextlib.contextmanager
def _hdf5_in_memory() -> Iterator[tuple[h5py.File, io.BytesIO]]:
    """An HDF5 file opened for writing into a ``BytesIO``, yielded with it; the buffer holds
    the whole file once the block ends (the file is closed)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        yield h5, buffer


def atomic_write_together(items: Iterable[tuple[str | os.PathLike, bytes | memoryview]]) -> None:
    """Write each ``(path, data)`` to a temporary file beside its path, and rename them into
    place only once all were written: files that belong together (a LoDoPaB observation and its
    ground truth) are all written or none (the earlier files under those names stay)."""
    with contextlib.ExitStack() as stack:
        for path, data in items:
            stack.enter_context(atomic_path(path)).write_bytes(data)


def control_escaped(text: str) -> str:
    """``text`` with its control characters but tabs and line breaks written ``\\xNN`` (C0,
    DEL and C1): for log lines and the report, where an input name's ESC sequences recoloured
    the terminal and its line breaks forged log lines."""
    return "".join(f"\\x{ord(c):02x}" if (ord(c) < 0x20 and c not in "\n\t")
                   or 0x7F <= ord(c) < 0xA0 else c for c in text)


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 (Python's surrogate escapes: a
    Latin-1 ``ü`` from a Windows share or an old scanner export reads as ``\\udcfc``) written as
    ``\\xfc``, so that reports, tables and ``metrics.csv`` naming it are valid UTF-8. Encoding
    them failed at the end of the run: exit 2, no report and no metrics, again on every
    ``--resume``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_bytes(text: str, encoding: str) -> bytes:
    """``text`` as the text writers write it: undecodable file-name bytes as ``\\xNN``
    (:func:`printable`), other characters ``encoding`` cannot hold as backslash escapes."""
    return printable(text).encode(encoding, "backslashreplace")


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically; undecodable file-name bytes in it are written as
    ``\\xNN`` (:func:`printable`), other characters ``encoding`` cannot hold as backslash
    escapes, rather than failing the write."""
    atomic_write_bytes(path, _text_bytes(text, encoding))


def append_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Append ``text`` (one or more whole lines) to the existing file ``path``: one ``O_APPEND``
    write, flushed to disk (``fsync``), so that a log of many records costs each record its own
    bytes (rewriting the file through :func:`atomic_write_text` for every record cost the whole
    file each time: O(n^2) over a long benchmark or training). A write that fails or is
    interrupted (a full disk, Ctrl-C) is cut back: the file keeps its earlier bytes, never part
    of ``text``, and the error names ``path``. A kill (SIGKILL, power loss) can still leave a
    torn last line; the readers drop it. Characters are written as :func:`atomic_write_text`
    writes them."""
    data = _text_bytes(text, encoding)
    target = Path(path)
    # O_BINARY (Windows): text mode wrote each "\n" as "\r\n" (csv rows "\r\r\n")
    # O_NOFOLLOW: as the atomic writes, never through a link planted at an output's name
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OSError(e.errno, f"{target}: is a symbolic link; mrirecon appends through no "
                               "link in an output folder: remove it and run again") from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            named = _naming_target(err, target, target)
            if named is None:
                raise
            named.atomic_target = target
            raise named from err
    finally:
        os.close(fd)


def feed_file(h, path: str | os.PathLike) -> None:
    """Feed the bytes of the file ``path`` to the hash ``h``, streamed in 1 MiB blocks."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file ``path`` (hex), streamed: the checksum of outputs and inputs that
    ``--resume`` and the training checks compare."""
    h = hashlib.sha256()
    feed_file(h, path)
    return h.hexdigest()
