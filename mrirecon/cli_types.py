"""Argument types of the command line: each parses one option's text or says, in argparse's
words, what it expected (``mrirecon simulate``, ``run``, ``bench``, ``train``), the action of
the options that take several values (:class:`Extend`), and the check that a folder can be
written (:func:`write_problem`)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def finite_float(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def acceleration(text: str) -> float:
    value = positive_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in ``[0, 2**32 - 1]``, the range of every seed of the package
    (:data:`mrirecon.sampling.cartesian.MAX_MASK_SEED`: numpy's ``RandomState``; the pipeline's
    ``undersample.fixed_seed`` and a training config's ``seed`` too). Every ``--seed`` has this
    type: ``train perceptual --seed -5`` said "expected non-negative integer", ``simulate ct
    --seed 2**64`` was an internal error of HDF5, ``simulate mri --trajectory radial --seed
    1e15`` "Overflow when unpacking long long", naming no option."""
    from mrirecon.sampling.cartesian import MAX_MASK_SEED

    value = int_at_least(0)(text)
    if value > MAX_MASK_SEED:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_MASK_SEED} (2**32 - 1), got {value}")
    return value


seed.__name__ = "seed"


def folder(text: str) -> str:
    """An output folder: not empty (``--output "$OUT"`` with ``OUT`` unset wrote into the
    current directory without a word), ``~`` expanded (the shell does not expand it in
    ``--output=~/x``: a folder named ``~`` was made in the working directory)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a folder "
                                         "(. for the current one)")
    return os.path.expanduser(text)


folder.__name__ = "folder"


def path(text: str) -> str:
    """A path to read (``--input``: a file, folder or glob pattern; ``--data``, ``--init``):
    not empty, ``~`` expanded, as :func:`folder`. ``--input ""`` and ``--data ""`` read every
    file of the working directory; ``--init ""`` said "PosixPath('.') has an empty name"."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return os.path.expanduser(text)


path.__name__ = "path"


def definition(text: str) -> str:
    """A pipeline or training config, a YAML file or a shipped one by name: a path with a name
    (``run ""`` and ``run .`` said "PosixPath('.') has an empty name", naming no argument)."""
    if not Path(os.path.expanduser(text)).name:
        what = "an empty name (an unset shell variable?)" if not text else f"{text!r} is a folder"
        raise argparse.ArgumentTypeError(f"{what}; give a YAML file or the name of a shipped one")
    return text


definition.__name__ = "definition"


def not_empty(text: str) -> str:
    """A value that must not be empty (``--mask-type ""`` used the default without a word)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty value (an unset shell variable?)")
    return text


not_empty.__name__ = "value"


class Extend(argparse.Action):
    """The action of an option that takes several values (``nargs``, or a comma-separated
    list): repeats add up, ``--input a.h5 --input b.h5`` is ``--input a.h5 b.h5``, as the
    repeatable ``--set`` and ``--weights`` do; the default stands only when the option is not
    given. (argparse's ``store`` kept the last repeat only: ``b.h5`` ran alone, exit 0; its
    ``extend`` adds to the default.) A value that is no list is one item."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest, None)
        items = [] if items is None or items is self.default else list(items)
        items.extend(values if isinstance(values, list) else [values])
        setattr(namespace, self.dest, items)


def write_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder`` (or, while it does not exist, under its
    nearest existing parent, where it would be created): ``"cannot write into|under WHERE
    (WHY)"``, or ``None``. A file in the way is :func:`mrirecon.io.atomic.file_in_the_way`'s to
    say. Nothing is left behind: a probe file is created and removed (``os.access`` says yes to
    root under ``/proc``, where no file can be created). Shared by ``simulate --out`` (the
    folder) and ``train --out`` (the folder of the weights file), checked before any work: a
    ``train`` into such a place trained its whole budget, then failed."""
    import tempfile

    target = Path(folder)
    where = target
    while not where.exists() and where != where.parent:
        where = where.parent
    why = None
    if not os.access(where, os.W_OK | os.X_OK):
        why = "permission denied"
        try:  # os.access says no on a read-only file system too, where no permission helps
            if os.statvfs(where).f_flag & os.ST_RDONLY:
                why = "the file system is read-only"
        except (OSError, AttributeError):  # no statvfs (Windows)
            pass
    else:
        try:
            fd, probe = tempfile.mkstemp(dir=where, prefix=".mrirecon-probe-")
        except OSError as err:
            why = err.strerror or str(err)
        else:
            os.close(fd)
            os.unlink(probe)
    if why is None:
        return None
    return f"cannot write {'into' if where == target else 'under'} {where} ({why})"
