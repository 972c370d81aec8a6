"""The one error type raised by the readers in :mod:`mrirecon.io` for malformed input."""

from __future__ import annotations

import os
from pathlib import Path


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


def open_hdf5(path: Path, kind: str, hint: str = ""):
    """``h5py.File(path, "r")`` for the readers: a FIFO or folder is refused first
    (:func:`require_regular_file`); a missing file (also one deleted after its folder was listed)
    is ``FileNotFoundError("PATH: no such KIND file" + hint)``, h5py's raw "[Errno 2] Unable to
    synchronously open file" otherwise; any other failure to open is a :class:`DataFormatError`
    of field ``file``."""
    import h5py

    require_regular_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such {kind} file{hint}") from None
        raise DataFormatError(path, "file", f"not a readable HDF5 file ({err})") from None


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
