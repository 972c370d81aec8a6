"""matplotlib imported for the package's own figures and sample data, whatever ``MPLBACKEND``
says: every ``import matplotlib`` in ``mrirecon`` comes after :func:`import_matplotlib`.

None of those users needs a backend (the PNG writers save through the Agg canvas that
``savefig(format="png")`` picks itself; ``train prior``, the ``staged_ct`` recipe and the
held-out MR image read matplotlib's sample files; ``viz`` leaves the backend to pyplot), but
matplotlib refuses an invalid ``MPLBACKEND`` when it is imported ("Key backend: 'garbage' is
not a valid value for backend"), which failed each of them naming no variable. Nor does a
read-only container stop them: where matplotlib finds no writable folder for its cache, it gets
a private one in the command's output folder (:func:`note_writable_folder`). Here: no
``mrirecon`` import (a neutral module below ``io``, ``training`` and ``viz``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("mrirecon")


#: Folders this process writes into anyway (a command's output folder, noted by
#: :func:`mrirecon.io.output_lock.lock_output`), the newest last: where matplotlib's
#: configuration and cache go when it finds no writable folder of its own
#: (:func:`import_matplotlib`).
_WRITABLE: list[Path] = []


def note_writable_folder(folder: str | os.PathLike) -> None:
    """Note ``folder`` (an output folder this process writes into) as the place for
    matplotlib's private configuration folder, should matplotlib find no writable folder of its
    own (a read-only container: :func:`import_matplotlib`)."""
    path = Path(os.path.abspath(folder))
    if path in _WRITABLE:
        _WRITABLE.remove(path)
    _WRITABLE.append(path)
    del _WRITABLE[:-8]  # a notebook's many runs: the newest few are enough


def import_matplotlib() -> None:
    """Import matplotlib (once per process). An ``MPLBACKEND`` that matplotlib refuses at its
    import (``MPLBACKEND=garbage``, a typo) is left out of that one import, with a warning
    naming the variable: the figures and sample images come out as without it, and pyplot in
    this process uses matplotlib's default backend. A valid value (a notebook's inline backend)
    is kept.

    matplotlib needs a writable folder for its configuration and font cache: ``MPLCONFIGDIR``,
    else ``~/.config/matplotlib`` / ``~/.cache/matplotlib``, else a temporary folder of its own
    (``TMPDIR``, ``/tmp``, ``/var/tmp``, the working directory). In a container whose root file
    system is read-only (only the output folder writable) none is, and its import failed
    ("Matplotlib requires access to a writable cache directory"): each input of a run failed
    at its PNG export, after its whole reconstruction. Then ``MPLCONFIGDIR`` is set to a private
    folder (``.matplotlib-PID-XXXXXXXX``, mode 0700) made in the newest noted output folder
    (:func:`note_writable_folder`) and removed when the process exits, with a warning (one left
    by a killed process is removed by the next run into that folder,
    :func:`mrirecon.pipeline.run_state.remove_orphans`); without a noted folder matplotlib's
    error is raised."""
    if "matplotlib" in sys.modules:
        return
    try:
        _import_matplotlib()
    except OSError as err:
        if "MPLCONFIGDIR" not in str(err):
            raise  # not the missing folder
        _forget_matplotlib()
        folder = _private_config_folder()
        if folder is None:
            raise
        os.environ["MPLCONFIGDIR"] = folder
        _import_matplotlib()
        log.warning("matplotlib found no writable folder for its configuration and cache "
                    "(MPLCONFIGDIR, the home folder's and a temporary one: TMPDIR, /tmp and the "
                    "working directory are read-only or missing here), so it uses %s, removed "
                    "when this process ends; set MPLCONFIGDIR to a writable folder to keep its "
                    "font cache between runs", folder)


def _private_config_folder() -> str | None:
    """A new folder (0700) in the newest noted writable folder that takes one, removed at exit;
    ``None`` where none does."""
    for parent in reversed(_WRITABLE):
        try:
            folder = tempfile.mkdtemp(prefix=f".matplotlib-{os.getpid()}-", dir=parent)
        except OSError:
            continue
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return folder
    return None


def _forget_matplotlib() -> None:
    """Drop a half-imported matplotlib from ``sys.modules`` (to be imported again)."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        del sys.modules[name]


def _import_matplotlib() -> None:
    """``import matplotlib``, without an ``MPLBACKEND`` that it refuses, and its cache folder
    found (see :func:`import_matplotlib`)."""
    try:
        import matplotlib  # noqa: F401
    except ValueError as err:
        value = os.environ.get("MPLBACKEND")
        if not value or "backend" not in str(err):
            raise
        _forget_matplotlib()  # the half-imported package, imported again below
        del os.environ["MPLBACKEND"]
        try:
            import matplotlib  # noqa: F401, F811
        finally:
            os.environ["MPLBACKEND"] = value
        log.warning("the environment variable MPLBACKEND=%r is not a matplotlib backend, so "
                    "matplotlib ignores it in this process (its default backend); mrirecon's "
                    "figures and sample images need none and are made (%s)", value,
                    str(err).split(";")[0])
    # the cache folder too (the font list), found here rather than at the first figure:
    # XDG_CACHE_HOME read-only beside a writable configuration folder failed only there
    sys.modules["matplotlib"].get_cachedir()
