"""The one timing helper of the benchmark scripts and their one ratio format (imported as
``from _timing import best_time, ratio_text``: each script runs from this folder)."""

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


def ratio_text(ours: float, peer: float) -> str:
    """The house ratio of every benchmark, ``ours / peer`` (below 1: ours is faster), with the
    factor in words: ``"0.37 (2.7x faster)"``, ``"1.32 (1.3x slower)"``."""
    r = ours / peer
    if r == 1:
        return f"{r:.2f} (as fast)"
    return f"{r:.2f} ({1 / r:.1f}x faster)" if r < 1 else f"{r:.2f} ({r:.1f}x slower)"
