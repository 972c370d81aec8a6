"""The package's process-wide caches, and the one way to empty them all: :func:`clear_caches`.

Modules keep what is costly to rebuild and small next to the work that uses it: the shared CT
projector and the FBP's interpolation tables and weights per geometry
(:mod:`mrirecon.operators.ct`, :mod:`mrirecon.operators.fbp`), NUFFT plans, density weights,
FFT checkerboards, wavelet band matrices, and every thread's wavelet plans (per-thread dicts
reached through a weak registry, :func:`mrirecon.functional.wavelet.plan_dicts`). Each cache is bounded by its number of entries, not by
bytes: a process that visits many geometries or sizes holds up to a few hundred MB of them
after its last operator is gone (FBP on 12 LoDoPaB-size geometries, 362 x 362, 1000 views, 513
detectors: +600 MB RSS, at most 8 geometries kept, each holding about 65 MB of projector and
interpolation tables, 74 MB of RSS). A module registers its cache's clear function here beside the cache
(``register(fn.cache_clear)``); a module never imported holds nothing, so nothing is imported
to clear it.

A cache that ``functools.lru_cache`` cannot express (keys that are not the arguments, a value
checked before use, a byte budget) is a :class:`BoundedLRU`: the NUFFT plans and density
weights (bounded by entries) and training's coil maps
(:class:`~mrirecon.training.maps_cache.MapsCache`, bounded by bytes).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

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


def _one(value: object) -> int:
    return 1


class BoundedLRU:
    """A least-recently-used map that threads may share, bounded by the total weight of its
    values: at most ``limit``, each value weighing ``weigh(value)`` (an integer, fixed while the
    value is held; default 1, so ``limit`` counts entries). Storing evicts the least recently
    used until the new value fits; a value heavier than ``limit`` is not kept (``limit`` 0 keeps
    nothing). A stored ``None`` reads as missing.

    Every dict operation holds one lock; what the caller computes between a :meth:`get` and a
    :meth:`put` does not (two threads may both build a missing value; the later store wins).
    Without the lock one thread evicted an entry between another's lookup and its
    ``move_to_end``: a raw ``KeyError`` from concurrent reconstructions (42 of 1264 scans at 8
    threads). :meth:`clear` is what a module registers with :func:`register`.
    """

    def __init__(self, limit: int, weigh: Callable[[Any], int] = _one) -> None:
        if limit < 0:
            raise ValueError(f"BoundedLRU: limit must be >= 0, got {limit}")
        self.limit, self._weigh = int(limit), weigh
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # value, weight
        self._weight = 0
        self._lock = threading.Lock()

    @property
    def weight(self) -> int:
        """The total weight of the values held."""
        return self._weight

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any) -> int:
        """Store ``value`` under ``key`` as the most recently used (replacing what ``key``
        held), evicting the least recently used until it fits; returns how many were evicted.
        Calls :meth:`_limit_reached` (under the lock) when the value did not fit beside the
        others."""
        w = int(self._weigh(value))
        with self._lock:
            if (old := self._entries.pop(key, None)) is not None:
                self._weight -= old[1]
            if self._weight + w > self.limit:
                self._limit_reached(len(self._entries))
            if w > self.limit:
                return 0
            dropped = 0
            while self._weight + w > self.limit:
                self._weight -= self._entries.popitem(last=False)[1][1]
                dropped += 1
            self._entries[key] = (value, w)
            self._weight += w
        return dropped

    def discard(self, key: Hashable, value: Any) -> None:
        """Drop ``key`` if it still holds ``value`` (a stale entry its caller found), not what
        another thread stored since."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is value:
                del self._entries[key]
                self._weight -= entry[1]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._weight = 0

    def _limit_reached(self, held: int) -> None:
        """Hook: a :meth:`put` found ``held`` entries leaving no room for its value (called
        under the lock: it must not use the cache)."""
