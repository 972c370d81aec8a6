"""A byte-bounded LRU cache of tensors: the coil maps of the MRI training sets.

:class:`~mrirecon.training.data.MRITrainingSet` and
:class:`~mrirecon.training.data_acquired.AcquiredMRISet` calibrate ESPIRiT / Walsh maps per
``(file, slice)``; recomputing them gives the same maps bit for bit, so keeping them is only a
speed-up. They were kept for the whole run with no bound: one ``(C, H, W)`` complex64 tensor per
slice drawn, 1 MiB for 8 x 128 x 128, about 27 MB for a fastMRI slice (16 coils, 640 x 368),
about 1 TB for one epoch of fastMRI knee or brain train, until the process was killed.

The budget is per process: ``mrirecon train`` builds one cache and gives it to its training and
validation sets; each ``torchrun`` rank builds its own, and a ``DataLoader`` worker holds its
own copy of a set's cache: started by ``spawn`` it is empty (:meth:`MapsCache.__getstate__`),
forked it starts with the parent's entries (pages shared until written); either way it keeps at
most the budget. The default (:func:`default_budget_bytes`) therefore divides an eighth of the
RAM among the ranks of the node.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from torch import Tensor

from mrirecon.core.caches import BoundedLRU

#: The default budget's ceiling, MiB: 75 fastMRI slices (27 MB each), or 2048 slices of
#: 8 x 128 x 128 maps (all of the shipped simulated training sets).
DEFAULT_MAPS_CACHE_MB = 2048
#: The default budget's share of the RAM, divided among the ``torchrun`` ranks of the node.
DEFAULT_MAPS_CACHE_RAM_FRACTION = 1 / 8


def default_budget_bytes() -> int:
    """The byte budget of ``data.maps_cache_mb`` when the config gives none: the smaller of
    :data:`DEFAULT_MAPS_CACHE_MB` MiB and an eighth of the RAM divided by ``LOCAL_WORLD_SIZE``
    (the ``torchrun`` processes on this node, each with its own cache)."""
    from mrirecon.io.errors import memory_bytes
    from mrirecon.threads import env_int

    ranks = max(env_int("LOCAL_WORLD_SIZE", 1), 1)
    share = int(memory_bytes() * DEFAULT_MAPS_CACHE_RAM_FRACTION) // ranks
    return min(DEFAULT_MAPS_CACHE_MB * 2**20, share)


def budget_from_mb(mb: float | None) -> int:
    """Bytes of a ``data.maps_cache_mb`` value (``None``: :func:`default_budget_bytes`)."""
    return default_budget_bytes() if mb is None else int(mb * 2**20)


def _nbytes(value: Tensor) -> int:
    return int(value.nbytes)


class MapsCache(BoundedLRU):
    """Tensors by key, at most ``budget`` bytes in all (``Tensor.nbytes``); the least recently
    used are evicted first, and a tensor larger than the whole budget is not kept. ``budget`` 0
    keeps nothing. The first time the budget is reached, one INFO line on the ``mrirecon.train``
    logger says that maps are now recomputed when drawn again. Thread-safe (a prefetching
    thread may fill it): a :class:`~mrirecon.core.caches.BoundedLRU` weighing its tensors in
    bytes."""

    def __init__(self, budget: int, *, setting: str = "data.maps_cache_mb") -> None:
        if budget < 0:
            raise ValueError(f"MapsCache: budget must be >= 0 bytes, got {budget}")
        super().__init__(budget, weigh=_nbytes)
        self.setting = setting
        self._full_logged = False

    @property
    def budget(self) -> int:
        """The byte budget."""
        return self.limit

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held."""
        return self.weight

    def put(self, key: Hashable, value: Tensor) -> int:
        """Keep ``value`` under ``key``, evicting the least recently used to stay in budget;
        returns how many were evicted.

        After an eviction the heap's free pages go back to the OS
        (:func:`~mrirecon.core.memory.release_memory`, about 1 ms against the tens of ms or
        more of the calibration that filled it): glibc kept the dropped maps' memory in a heap
        fragmented by the maps still held, and RSS settled at +92 MiB over a 16 MiB budget
        (+22 MiB with the trim; 160 slices of 8 x 128 x 128)."""
        dropped = super().put(key, value)
        if dropped:  # the memory of maps dropped before (a caller may still hold this one's)
            from mrirecon.core.memory import release_memory

            release_memory()
        return dropped

    def _limit_reached(self, held: int) -> None:
        if self._full_logged or self.budget == 0:  # 0: caching was turned off, nothing to say
            return
        self._full_logged = True
        from mrirecon.data.budget import size_text

        logging.getLogger("mrirecon.train").info(
            "coil maps cache: its budget of %s (%s) is reached with the maps of %d slice(s); "
            "from now on the least recently used maps are dropped and recomputed when their "
            "slice is drawn again (the same maps, more calibration time; raise %s to keep more)",
            size_text(self.budget), self.setting, held, self.setting)

    def __getstate__(self) -> dict:  # a copy (DataLoader worker) starts empty, same budget
        return {"budget": self.budget, "setting": self.setting}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["budget"], setting=state["setting"])
