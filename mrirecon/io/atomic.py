"""Atomic file writes: write to a temporary file beside the target, then rename.

A failed or interrupted write never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


#: The longest file name (bytes) of the usual file systems (ext4, XFS, btrfs, NTFS, APFS).
NAME_MAX = 255
_RANDOM = 8  # characters mkstemp puts between prefix and suffix


def cut_name(name: str, extra: int) -> str:
    """``name`` cut (in bytes, as the file system counts) so that ``extra`` more bytes around it
    still make a file name of at most :data:`NAME_MAX` bytes; at least one byte is kept."""
    return os.fsdecode(os.fsencode(name)[:max(NAME_MAX - extra, 1)])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    On any exception the temporary file is removed and the target is left untouched.
    ``suffix`` defaults to the target's suffix (some writers infer the format from it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tail = (suffix if suffix is not None else target.suffix) + ".tmp"
    # the temporary name holds the target's, cut so that it fits where the target fits: a
    # 240-byte name failed with "File name too long" only because of these 17 bytes
    short = cut_name(target.name, len(os.fsencode(tail)) + _RANDOM + 2)
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.", suffix=tail, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically; undecodable file-name bytes in it are written as
    ``\\xNN`` (:func:`printable`), other characters ``encoding`` cannot hold as backslash
    escapes, rather than failing the write."""
    atomic_write_bytes(path, printable(text).encode(encoding, "backslashreplace"))


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
