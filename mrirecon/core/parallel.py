"""Task parallelism for independent pieces of one CPU operation (the row chunks of ESPIRiT).

Why not torch's own intra-op threads there: the CLI sets ``OMP_WAIT_POLICY=PASSIVE``
(:mod:`mrirecon.threads`) so that a busy machine does not stall OpenMP's barriers, and with it
every parallel region first wakes a sleeping worker. ESPIRiT's chunks are many mid-size batched
products; run whole on separate Python threads (one intra-op thread each; torch releases the
GIL inside every operation) they took 0.185 s against 0.223 s with two intra-op threads
(medians of 8 alternated runs, 8 coils 320 x 320, 2-core EPYC). Tried and not kept: the SENSE
gram's coil groups on separate threads, 6.0-7.3 ms against 5.2-6.0 ms with intra-op threads
(the large FFTs and products there scale on their own); the real and imaginary planes of a
320 x 320 wavelet pair on two threads, 8.6-9.2 ms against 9.4-10.5 ms in turn (its ~50 short
operations are dominated by Python and dispatch, which the GIL serialises).

:func:`map_tasks` runs ``fn`` over ``items`` on up to ``torch.get_num_threads()`` threads (the
caller's thread plus a persistent pool), only when that count is between 2 and
:data:`MAX_TASK_THREADS` (measured on 2 cores; above that the per-operation dispatch under the
GIL is untested and torch's intra-op threading is kept). For its duration the intra-op count
is 1 (restored afterwards, also on errors), the caller's grad and inference modes hold in every
worker, and results come back in the order of ``items``. Nested calls run serially.

:func:`one_thread` and :func:`map_tasks` drop the count only while the caller is the process's
only Python thread besides the task pool's own and tqdm's monitor (:func:`_alone`); otherwise
:func:`one_thread` leaves it alone and :func:`map_tasks` runs serially.
``torch.set_num_threads`` sets the calling thread's OpenMP/MKL count and also torch's
process-wide default, which every other thread adopts at its first torch call (measured, torch
2.13, ``OMP_NUM_THREADS=2``: a thread started before the block but first using torch inside it
keeps 1 for life, and the restore reaches only the calling thread). Without the check, 9 of 20
request threads that a service started while another request ran ``l1_wavelet`` stayed on one
intra-op thread for good. Threads that torch or other C code start without Python (CUDA's
autograd threads, ``torch.jit``'s inter-op pool) are not seen by the check.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

#: Most threads :func:`map_tasks` uses; with more, torch's intra-op threads are kept.
MAX_TASK_THREADS = 4

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(MAX_TASK_THREADS - 1, thread_name_prefix="mrirecon-task",
                                       initializer=_own_thread_started)
        return _POOL


#: The task pool's threads (each adds itself as it starts; they live until exit).
_OWN: set[threading.Thread] = set()


def _own_thread_started() -> None:
    _OWN.add(threading.current_thread())


def _alone() -> bool:
    """Whether no Python thread but the caller and threads known never to start torch work is
    alive (the task pool's, tqdm's monitor, which every progress bar of the runner starts, even
    a disabled one): only then may torch's process-wide default thread count change (see the
    module docstring)."""
    if threading.active_count() == 1:
        return True
    me = threading.current_thread()
    monitor = getattr(sys.modules.get("tqdm._monitor"), "TMonitor", ())
    return all(t is me or t in _OWN or isinstance(t, monitor) for t in threading.enumerate())


@contextlib.contextmanager
def one_thread():
    """One intra-op thread for the block, the caller's count restored afterwards (also on
    errors); no change while other Python threads are alive (:func:`_alone`), as
    ``torch.set_num_threads`` also sets the count those threads adopt at their first torch
    call."""
    threads = torch.get_num_threads()
    if threads == 1 or not _alone():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: Largest tensor (elements) whose work :func:`serial_if_small` keeps on one intra-op thread.
#: A wavelet transform's ~50 small GEMMs and gathers, or a shrinkage pass, each open an OpenMP
#: parallel region; with the passive wait policy the CLI sets (``mrirecon.threads``) every
#: region first wakes the sleeping worker, which costs more than the second core gains: the
#: 320 x 320 wavelet pair took 6.6-6.9 ms on one thread and 7.8-11.9 ms on two, 640 x 368
#: 11.7-11.9 and 12.2-17.7 ms; soft thresholding at 320 x 320 0.39 and 0.57 ms (db4, 4
#: levels, complex64, 2-core EPYC).
SERIAL_MAX = 1 << 18


def serial_if_small(x: torch.Tensor):
    """:func:`one_thread` for work on ``x`` when it has at most :data:`SERIAL_MAX` elements,
    else no change."""
    return one_thread() if x.numel() <= SERIAL_MAX else contextlib.nullcontext()


def task_threads(n_items: int) -> int:
    """Threads :func:`map_tasks` would use for ``n_items`` pieces (1: serial, also while other
    Python threads are alive)."""
    threads = torch.get_num_threads()
    if not 2 <= threads <= MAX_TASK_THREADS or not _alone():
        return 1
    return max(1, min(threads, n_items))


def map_tasks(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, the items spread over :func:`task_threads` threads."""
    todo: Sequence[T] = list(items)
    workers = task_threads(len(todo))
    if workers < 2:
        return [fn(item) for item in todo]
    results: list = [None] * len(todo)
    order = iter(range(len(todo)))
    lock = threading.Lock()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def drain() -> None:
        torch.set_num_threads(1)  # this thread's OpenMP/MKL count (set per thread, lazily)
        mode = torch.inference_mode() if inference else contextlib.nullcontext()
        with mode, torch.set_grad_enabled(grad):
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                results[i] = fn(todo[i])

    with one_thread():
        futures = [_pool().submit(drain) for _ in range(workers - 1)]
        try:
            drain()
        finally:
            wait(futures)  # no worker may still run when the count is restored
        for f in futures:
            f.result()  # re-raise a worker's error
    return results
