"""Make training samples on a second core while the network trains on the first.

:class:`Prefetch` runs ``make()`` on one background thread and hands its results out in the
order they were made, a few ahead. Sample generation in the CT trainers is mostly torch and
scipy work (projector, FBP, CG), which releases the GIL, so with one intra-op thread per
process the producer and the training step occupy one core each. Because every result comes
out in order and each ``get()`` takes exactly one, a run consumes the same samples as the
sequential loop it replaces: the data of a seeded run do not depend on the timing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """``get()`` returns the next result of ``make()``, computed ahead on a background thread.

    ``ahead`` results are kept ready at most. An exception raised by ``make`` is raised again by
    the ``get()`` that would have returned its result. Use as a context manager (or call
    :meth:`close`) so the thread stops with the loop that uses it.
    """

    def __init__(self, make: Callable[[], T], ahead: int = 2) -> None:
        if ahead < 1:
            raise ValueError(f"Prefetch: ahead must be >= 1, got {ahead}")
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True,
                                        name="mrirecon-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], T]) -> None:
        while not self._stop.is_set():
            try:
                item = make()
            except BaseException as exc:  # handed to the consumer, which re-raises it
                self._put(_Failure(exc))
                return
            if not self._put(item):
                return

    def get(self) -> T:
        """The next result (blocks until it is made)."""
        if self._stop.is_set():
            raise RuntimeError("Prefetch: get() after close()")
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the producer (a ``make()`` already running finishes first) and drop its results."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
