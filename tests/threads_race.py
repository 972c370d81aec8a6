"""Run callables in threads started together at a 1-us switch interval, so that a race on shared
state shows within a few dozen calls (the thread tests of masks and seeded model builds)."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager


@contextmanager
def fast_switching():
    """Switch threads every microsecond (the interpreter's interval restored after)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(jobs) -> list:
    """Run the callables ``jobs`` in one thread each, started together at a barrier under
    :func:`fast_switching`; their results, in order. The first exception is raised again."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i):
        try:
            barrier.wait()
            results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with fast_switching():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results
