"""The one timing helper of the benchmark scripts, their one ratio format and their one
account of the machine and of what else was running (imported as ``from _timing import
best_time, ratio_text``: each script runs from this folder)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
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


def machine_line() -> str:
    """The CPU model, core count, platform and the torch / numpy versions."""
    import numpy as np
    import torch
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}, "
            f"numpy {np.__version__}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def others_running() -> str:
    """Load average and the busiest other processes (what else was running); what a platform
    cannot tell (no ``getloadavg`` or ``ps``) is said so."""
    load = ("load average " + "/".join(f"{v:.1f}" for v in os.getloadavg())
            if hasattr(os, "getloadavg") else "load average unknown")
    try:
        ps = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
                            capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return f"{load} (pid {os.getpid()}); busiest: unknown (no ps)"
    busy = [p.strip() for p in ps[:8] if p.strip() and float(p.split()[0]) > 10]
    return f"{load} (pid {os.getpid()}); busiest: {busy}"
