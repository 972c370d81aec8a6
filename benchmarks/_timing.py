"""The one timing helper of the benchmark scripts (imported as ``from _timing import best_time``:
each script runs from this folder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeats: int, *, warmup: int = 0,
              sync: Callable[[], Any] | None = None,
              reduce: Callable[[list[float]], float] = min) -> tuple[float, Any]:
    """``(reduce(wall times in s), last result)`` of ``fn()`` over ``repeats`` calls after
    ``warmup`` untimed calls; ``sync`` (e.g. ``torch.cuda.synchronize``) runs inside the timing.
    ``reduce=min`` is the least-disturbed run on a shared machine; ``statistics.median`` the
    typical one."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return reduce(times), out
