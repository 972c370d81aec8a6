"""Checks of simulation requests before anything is allocated or written: size, and an output
folder that holds another simulation."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from mrirecon.io.errors import memory_bytes as physical_memory  # bytes of RAM: one rule


def size_text(nbytes: float) -> str:
    """``nbytes`` for a message, in the unit that shows it: "3.2 GiB", "12.0 MiB", "3 KiB" (a
    small request said "writes about 0.0 GiB, but only 0.0 GiB are free")."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} KiB" if nbytes >= 2**10 else f"{nbytes:.0f} bytes"


def check_budget(who: str, memory_bytes: float, disk_bytes: float, out_dir: str | os.PathLike,
                 what: str) -> None:
    """Raise ``ValueError`` (naming ``what``, e.g. the options) when a request would need more
    than half the RAM, or more disk than is free under ``out_dir``."""
    ram = physical_memory()
    if memory_bytes > ram / 2:
        raise ValueError(f"{who}: {what} needs about {size_text(memory_bytes)} of memory, more "
                         f"than half of the {size_text(ram)} here; choose smaller sizes")
    probe = Path(out_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if disk_bytes > free:
        raise ValueError(f"{who}: {what} writes about {size_text(disk_bytes)}, but only "
                         f"{size_text(free)} are free under {probe}; choose smaller sizes")


def refuse_stale_files(who: str, out_dir: str | os.PathLike, pattern: str, names) -> None:
    """Raise ``FileExistsError`` when ``out_dir`` holds files whose names match ``pattern`` (the
    files of an earlier simulation) but are not among ``names`` (the files this run writes and
    so replaces): the folder would mix two datasets. Nothing is deleted."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    keep = set(names)
    stale = sorted(p.name for p in out.iterdir() if re.fullmatch(pattern, p.name) and p.name not in keep)
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise FileExistsError(
            f"{who}: {out} already holds {len(stale)} file(s) of another simulation that this run "
            f"would not replace ({shown}); the folder would mix two datasets: write to a new "
            "folder (or remove those files)")
