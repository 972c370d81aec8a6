"""matplotlib imported for the package's own figures and sample data, whatever ``MPLBACKEND``
says: every ``import matplotlib`` in ``mrirecon`` comes after :func:`import_matplotlib`.

None of those users needs a backend (the PNG writers save through the Agg canvas that
``savefig(format="png")`` picks itself; ``train prior``, the ``staged_ct`` recipe and the
held-out MR image read matplotlib's sample files; ``viz`` leaves the backend to pyplot), but
matplotlib refuses an invalid ``MPLBACKEND`` when it is imported ("Key backend: 'garbage' is
not a valid value for backend"), which failed each of them naming no variable. Here: no
``mrirecon`` import (a neutral module below ``io``, ``training`` and ``viz``).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("mrirecon")


def import_matplotlib() -> None:
    """Import matplotlib (once per process). An ``MPLBACKEND`` that matplotlib refuses at its
    import (``MPLBACKEND=garbage``, a typo) is left out of that one import, with a warning
    naming the variable: the figures and sample images come out as without it, and pyplot in
    this process uses matplotlib's default backend. A valid value (a notebook's inline backend)
    is kept."""
    if "matplotlib" in sys.modules:
        return
    try:
        import matplotlib  # noqa: F401
    except ValueError as err:
        value = os.environ.get("MPLBACKEND")
        if not value or "backend" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]  # the half-imported package, imported again below
        del os.environ["MPLBACKEND"]
        try:
            import matplotlib  # noqa: F401, F811
        finally:
            os.environ["MPLBACKEND"] = value
        log.warning("the environment variable MPLBACKEND=%r is not a matplotlib backend, so "
                    "matplotlib ignores it in this process (its default backend); mrirecon's "
                    "figures and sample images need none and are made (%s)", value,
                    str(err).split(";")[0])
