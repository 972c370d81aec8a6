"""The package's process-wide caches, and the one way to empty them all: :func:`clear_caches`.

Modules keep what is costly to rebuild and small next to the work that uses it: the shared CT
projector and the FBP's interpolation tables and weights per geometry
(:mod:`mrirecon.operators.ct`, :mod:`mrirecon.operators.fbp`), NUFFT plans, density weights,
FFT checkerboards, wavelet band matrices. Each cache is bounded by its number of entries, not by
bytes: a process that visits many geometries or sizes holds up to a few hundred MB of them
after its last operator is gone (FBP on 12 LoDoPaB-size geometries, 362 x 362, 1000 views, 513
detectors: +600 MB RSS, each geometry keeping about 44 MB of projector and interpolation
tables). A module registers its cache's clear function here beside the cache
(``register(fn.cache_clear)``); a module never imported holds nothing, so nothing is imported
to clear it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

_CLEARS: list[Callable[[], object]] = []
_LOCK = threading.Lock()


def register(clear: Callable[[], object]) -> Callable[[], object]:
    """Add a cache's clear function (an ``lru_cache``'d function's ``cache_clear``, a dict's
    ``clear``) to those :func:`clear_caches` calls; registering it again changes nothing.
    Returns ``clear``."""
    with _LOCK:
        if clear not in _CLEARS:
            _CLEARS.append(clear)
    return clear


def registered() -> tuple[Callable[[], object], ...]:
    """The clear functions registered so far, in the order of registration."""
    with _LOCK:
        return tuple(_CLEARS)


def clear_caches() -> None:
    """Empty every cache the package keeps across calls, then hand the freed memory back.

    Call it when a long-running process (a service, a notebook) is done with a set of
    geometries or image sizes. Operators and results still referenced elsewhere stay valid:
    only the package's own references go, and the next call rebuilds what it needs (the same
    values). Afterwards the heap's free pages return to the OS
    (:func:`mrirecon.core.memory.release_memory`) and, where CUDA is in use, torch's cached
    GPU blocks to the driver (``torch.cuda.empty_cache``). Safe while other threads compute:
    a cache emptied under a running call only makes that call rebuild an entry.
    """
    for clear in registered():
        clear()
    from mrirecon.core.memory import release_memory

    release_memory()
    torch = sys.modules.get("torch")  # not imported: no CUDA memory to give back
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
