"""mrirecon.training.prefetch: results in the order made, errors re-raised, the thread stops."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mrirecon.training.prefetch import Prefetch


def test_prefetch_hands_out_the_sequential_results_in_order():
    def maker(seed):
        rng = np.random.default_rng(seed)
        return lambda: torch.from_numpy(rng.standard_normal(16))

    sequential = maker(3)
    expected = [sequential() for _ in range(25)]
    with Prefetch(maker(3), ahead=3) as feeder:
        got = []
        for _ in range(25):
            got.append(feeder.get())
            time.sleep(0.001 * (len(got) % 3))  # consumer timing must not change the data
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prefetch_reraises_the_producers_error_and_stops():
    calls = []

    def make():
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("bad sample 3")
        return len(calls)

    feeder = Prefetch(make, ahead=1)
    assert feeder.get() == 1 and feeder.get() == 2
    with pytest.raises(ValueError, match="bad sample 3"):
        feeder.get()
    with pytest.raises(RuntimeError, match="after close"):
        feeder.get()


def test_close_stops_a_producer_blocked_on_a_full_queue():
    feeder = Prefetch(lambda: 0, ahead=1)
    time.sleep(0.05)  # the producer fills the queue and waits
    assert feeder._thread.is_alive()
    feeder.close()
    # its own thread, not the process's count: another thread (tqdm's monitor) may come or go
    assert not feeder._thread.is_alive()
    with pytest.raises(ValueError, match="ahead"):
        Prefetch(lambda: 0, ahead=0)
