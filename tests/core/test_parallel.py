"""mrirecon.core.parallel: order, thread count, modes and errors of map_tasks."""

import threading

import pytest
import torch

from mrirecon.core import parallel


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_map_tasks_orders_results_and_uses_two_threads(two_threads):
    seen = set()

    def work(i):
        seen.add(threading.get_ident())
        assert torch.get_num_threads() == 1  # one intra-op thread per task thread
        return torch.full((4,), float(i)).sum().item()

    barrier = threading.Barrier(2, timeout=10)

    def first_two_meet(i):  # both threads must be inside at once, or the barrier times out
        if i < 2:
            barrier.wait()
        return work(i)

    assert parallel.map_tasks(first_two_meet, range(7)) == [4.0 * i for i in range(7)]
    assert len(seen) == 2
    assert torch.get_num_threads() == 2


def test_map_tasks_keeps_grad_and_inference_modes(two_threads):
    with torch.no_grad():
        assert parallel.map_tasks(lambda _: torch.is_grad_enabled(), range(4)) == [False] * 4
    with torch.inference_mode():
        assert parallel.map_tasks(lambda _: torch.is_inference_mode_enabled(), range(4)) == [True] * 4
    assert parallel.map_tasks(lambda _: torch.is_inference_mode_enabled(), range(4)) == [False] * 4


def test_map_tasks_reraises_and_restores_the_thread_count(two_threads):
    def fail(i):
        if i == 3:
            raise ValueError("piece 3")
        return i

    with pytest.raises(ValueError, match="piece 3"):
        parallel.map_tasks(fail, range(6))
    assert torch.get_num_threads() == 2


def test_map_tasks_serial_cases(two_threads, monkeypatch):
    main = threading.get_ident()
    # nested: the inner call sees one thread and runs where it is called
    inner = parallel.map_tasks(lambda _: parallel.map_tasks(lambda _: threading.get_ident(), range(3)), range(2))
    assert all(len(set(ids)) == 1 for ids in inner)
    assert parallel.map_tasks(lambda _: threading.get_ident(), [0]) == [main]  # one item
    monkeypatch.setattr(parallel, "MAX_TASK_THREADS", 1)  # more threads than the rule allows
    assert set(parallel.map_tasks(lambda _: threading.get_ident(), range(5))) == {main}
    torch.set_num_threads(1)
    assert parallel.task_threads(8) == 1
