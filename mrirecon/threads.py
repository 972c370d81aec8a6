"""Thread policy: how many CPU threads torch (and OpenMP/BLAS) may use in this process.

The command line calls :func:`configure_threads` once, before any work:

1. ``--threads N`` wins, then ``MRIRECON_THREADS=N``, then an ``OMP_NUM_THREADS`` the user set
   (:func:`thread_choice` says which; ``mrirecon bench`` names it under its table);
2. otherwise the cores this process may actually run on: the CPU affinity mask
   (``os.sched_getaffinity``, what ``taskset``/``numactl``/Slurm grant), capped by a cgroup CPU
   quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1: what Docker's
   ``--cpus`` and Kubernetes CPU limits set), rounded down, at least 1 —
   ``os.cpu_count()`` would count cores the process can never use, and torch's default does;
3. under ``torchrun`` each of the ``LOCAL_WORLD_SIZE`` processes on a node takes an equal share.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, unless the user set it): with the
default spinning wait, a parallel region on a machine where another process holds a core stalls
every thread until the descheduled one returns, which made two-thread runs several times slower
than one thread under load (see ``benchmarks/README.md``). The environment variables must be set
before torch loads its OpenMP runtime, which :func:`set_wait_policy` does from the CLI's entry
point.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: More threads than any machine's cores gains nothing; OpenMP fails to create ~20000 of them
#: ("libgomp: Thread creation failed") and segfaults at 100000.
MAX_THREADS = 1024


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (``None``: no quota or no cgroup file readable)."""
    try:  # cgroup v2 (unified): "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: affinity mask, capped by the cgroup quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


#: Where a thread count came from (:func:`thread_choice`), as said under a benchmark table.
SOURCES = {"--threads": "`--threads`",
           "MRIRECON_THREADS": "the environment variable MRIRECON_THREADS",
           "OMP_NUM_THREADS": "the environment variable OMP_NUM_THREADS",
           "OMP_NUM_THREADS (torchrun)": "the environment variable OMP_NUM_THREADS=1, which "
                                         "torchrun sets for each process where it is unset",
           "cores": "the cores available to this process"}
#: Set by :func:`configure_threads` to ``"N SOURCE"``: the ``OMP_NUM_THREADS=N`` it exported
#: for child processes is its own choice, not the user's (a second choice in this process, or a
#: child's, said "OMP_NUM_THREADS" for a count the cores had given).
CHOSEN_VAR = "MRIRECON_THREADS_CHOSEN"
#: ``(count, source)`` of the last :func:`configure_threads` (the command line's), or ``None``.
_configured: tuple[int, str] | None = None


def thread_count(requested: int | None = None, *, local_world_size: int | None = None,
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Threads for this process: ``requested``, else its share of :func:`available_cpus`
    (:func:`thread_choice`, whose count it returns)."""
    return thread_choice(requested, local_world_size=local_world_size, cgroup_root=cgroup_root)[0]


def thread_choice(requested: int | None = None, *, local_world_size: int | None = None,
                  cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """``(threads, source)`` for this process: ``requested`` (source ``"--threads"``), else
    ``MRIRECON_THREADS``, else a user-set ``OMP_NUM_THREADS`` (each its own name as source; the
    value :func:`configure_threads` exported keeps the source it was chosen by, and a 1 among
    several local ranks is said to be torchrun's default, ``"OMP_NUM_THREADS (torchrun)"``:
    torchrun sets it for each process where it is unset, so the share below applies under
    torchrun only with ``OMP_NUM_THREADS=`` set empty), else its share of
    :func:`available_cpus` (``"cores"``).

    ``local_world_size`` defaults to ``LOCAL_WORLD_SIZE`` (set by ``torchrun``), so ``k`` ranks
    on one node split the cores ``k`` ways.
    """
    source = "--threads"
    own = os.environ.get("MRIRECON_THREADS", "").strip()
    if requested is None and own:
        try:  # 'abc' and '-3' were ignored without a word, '--3' "invalid literal for int()"
            requested, source = int(own), "MRIRECON_THREADS"
        except ValueError:
            raise ValueError(f"MRIRECON_THREADS must be an integer >= 1, got {own!r}") from None
    if local_world_size is None:  # 'abc' broke every command with "invalid literal for int()"
        local_world_size = env_int("LOCAL_WORLD_SIZE", 1)
    local_world_size = max(1, local_world_size)
    if requested is None:
        requested = _omp_num_threads()
        source = "OMP_NUM_THREADS"
        chosen = os.environ.get(CHOSEN_VAR, "").split(" ", 1)
        if requested is not None and len(chosen) == 2 and chosen[0] == str(requested) and \
                chosen[1] in SOURCES:  # the count configure_threads exported, not the user's
            source = chosen[1]
        elif requested == 1 and local_world_size > 1:  # torchrun's default cannot be told apart
            source = "OMP_NUM_THREADS (torchrun)"
    if requested is not None:
        if requested < 1:
            raise ValueError(f"{source} must be >= 1, got {requested}")
        if requested > MAX_THREADS:  # 20000: "libgomp: Thread creation failed"; 100000: a segfault
            raise ValueError(f"{source} {requested} is more than {MAX_THREADS} threads; this process "
                             f"may use {available_cpus(cgroup_root)} core(s)")
        _warn_oversubscribed(int(requested), source, available_cpus(cgroup_root), local_world_size)
        return int(requested), source
    return max(1, available_cpus(cgroup_root) // local_world_size), "cores"


def load_average() -> tuple[float, float, float] | None:
    """The system's 1-, 5- and 15-minute load averages (``os.getloadavg``), or ``None`` where
    the platform has none (Windows: ``os.getloadavg`` is Unix-only, and ``mrirecon train
    primal_dual_ct`` / ``staged_ct`` died at their first line with "AttributeError: module 'os'
    has no attribute 'getloadavg'") or cannot tell (``OSError``). Callers leave the load out of
    their logs and cards when it is ``None``."""
    getloadavg = getattr(os, "getloadavg", None)
    if getloadavg is None:
        return None
    try:
        return tuple(float(v) for v in getloadavg())  # type: ignore[return-value]
    except OSError:
        return None


def load_text(load: tuple[float, ...] | None = None) -> str:
    """``", load 1.2"`` (the 1-minute load average, ``load`` or now) for a progress line; empty
    where the platform has none (Windows: :func:`load_average`)."""
    load = load_average() if load is None else load
    return "" if load is None else f", load {load[0]:.1f}"


def load_fields(load_start: tuple[float, ...] | None) -> dict:
    """A card's ``load_average_start`` / ``load_average_end`` (now), each left out where the
    platform gives no load average (Windows)."""
    fields = {"load_average_start": load_start, "load_average_end": load_average()}
    return {k: [round(v, 2) for v in load] for k, load in fields.items() if load is not None}


def env_int(name: str, default: int) -> int:
    """An integer environment variable (``torchrun``'s ``RANK``, ``WORLD_SIZE``); unset or blank
    gives ``default``, anything else that is not an integer an error that names the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:  # was "invalid literal for int() with base 10: 'x'", naming no variable
        raise ValueError(f"{name} in the environment must be an integer, got {text!r}") from None


def _omp_num_threads() -> int | None:
    """The thread count of an ``OMP_NUM_THREADS`` the user set (OpenMP's list ``4,2``: its first,
    outermost level), ``None`` when unset; ``0`` is returned (and refused by the caller). Any other
    value (``-2``, ``garbage``) is ignored with a warning naming the variable: it was ignored
    without a word (libgomp's own "Invalid value" line at most), while ``MRIRECON_THREADS=-3`` is
    refused."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    first = text.split(",")[0].strip()
    if all(part.strip().isascii() and part.strip().isdigit() for part in text.split(",")):
        return int(first)
    import logging

    logging.getLogger("mrirecon.threads").warning(
        "OMP_NUM_THREADS=%r in the environment is not a thread count (an integer >= 1), so it is "
        "ignored: this process uses the cores available to it; set OMP_NUM_THREADS to a positive "
        "integer, unset it, or pass --threads N", text)
    return None


def rank_and_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` of a ``torchrun``-style environment (``(0, 1)`` without one),
    refused unless ``0 <= RANK < WORLD_SIZE`` and, with ``WORLD_SIZE > 1``, ``RANK`` is set too:
    ``RANK=3 WORLD_SIZE=2`` left in the environment ran no input (``mrirecon run``) or waited for
    peers that never come (``mrirecon train``)."""
    world = env_int("WORLD_SIZE", 1)
    if world > 1 and not os.environ.get("RANK", "").strip():
        raise ValueError(f"WORLD_SIZE={world} is set in the environment but RANK is not (torchrun "
                         "sets both): this process would take only its share of the work; "
                         "unset WORLD_SIZE, or set RANK")
    rank = env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world} (RANK / WORLD_SIZE in the "
                         "environment?): need 0 <= RANK < WORLD_SIZE")
    return rank, world


def _warn_oversubscribed(requested: int, source: str, cores: int, local_world_size: int) -> None:
    """One warning when ``requested`` threads exceed this process's cores (its share of them
    under ``torchrun``: ``cores // LOCAL_WORLD_SIZE``): the threads then take turns on the cores,
    slower than fewer threads (``--threads 64`` on 2 cores ran 2-3x slower, without a word)."""
    share = max(1, cores // local_world_size)
    if requested <= share:
        return
    import logging

    mine = f"the {share} core(s) this process may use" + (
        "" if local_world_size == 1 else
        f" (its share of {cores} among LOCAL_WORLD_SIZE={local_world_size} processes on this node)")
    logging.getLogger("mrirecon.threads").warning(
        "%s %d is more than %s; its threads take turns on them, which is slower than %d "
        "thread(s): pass --threads %d or fewer", source, requested, mine, share, share)


def set_wait_policy() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set; effective only before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(requested: int | None = None) -> int:
    """Apply the policy to torch (intra-op threads) and to child processes (``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` where unset); returns the thread count."""
    import torch

    global _configured
    n, source = thread_choice(requested)
    torch.set_num_threads(n)
    _configured = (n, source)
    for var in _ENV_VARS:  # which makes OMP_NUM_THREADS look user-set: the source is kept above
        os.environ.setdefault(var, str(n))
    if os.environ.get("OMP_NUM_THREADS") == str(n):  # and for a later choice, here or in a child
        os.environ[CHOSEN_VAR] = f"{n} {source}"
    return n


def thread_source(count: int) -> str | None:
    """Where this process's thread ``count`` (``torch.get_num_threads()``) came from: the
    source (a key of :data:`SOURCES`) :func:`configure_threads` chose it by, while torch still
    runs with that count; ``None`` otherwise (set by the calling program, or torch's default).
    ``mrirecon bench`` records it beside the count: its table credited every count to
    ``--threads``, also one an inherited ``OMP_NUM_THREADS=1`` had set."""
    if _configured is not None and _configured[0] == count:
        return _configured[1]
    return None


def forget_configured() -> None:
    """Forget the last :func:`configure_threads` (for tests of a program that never ran it)."""
    global _configured
    _configured = None


def use_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to ``requested`` when given (a trainer's ``--threads``) and
    return the count it runs with (recorded in model cards), leaving the process's own setting
    (the CLI's :func:`configure_threads`) when ``None``."""
    import torch

    if requested is not None:
        torch.set_num_threads(requested)
    return torch.get_num_threads()
