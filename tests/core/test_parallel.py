"""mrirecon.core.parallel: order, thread count, modes and errors of map_tasks."""

import threading
import time

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


def test_one_thread_never_leaves_other_threads_on_one_intra_op_thread(two_threads):
    """A thread that first touches torch while another thread is inside ``one_thread`` adopts
    torch's process-wide default; ``one_thread`` must never have set that to 1 (it keeps the
    count when other Python threads exist), so every request thread sees the process count, at
    its first torch call and after the looping thread has finished."""
    stop, done = threading.Event(), threading.Event()
    first, later = [], []

    def library_loop():  # a request that keeps entering one_thread, like l1_wavelet's steps
        while not stop.is_set():
            with parallel.one_thread():
                time.sleep(1e-3)  # most of the loop's time is inside the block

    def request():
        first.append(torch.get_num_threads())  # this thread's first torch call
        done.wait()
        later.append(torch.get_num_threads())

    loop = threading.Thread(target=library_loop)
    loop.start()
    requests = []
    try:
        for _ in range(40):  # before the fix ~9 in 10 of these started on 1 thread
            requests.append(threading.Thread(target=request))
            requests[-1].start()
            time.sleep(2e-3)
    finally:
        stop.set()
        loop.join()
        done.set()
        for t in requests:
            t.join()
    assert first == [2] * 40 and later == [2] * 40
    assert torch.get_num_threads() == 2


def test_one_thread_switches_only_without_other_python_threads(two_threads):
    """Alone (besides mrirecon's own task threads and tqdm's monitor, which the runner's progress
    bars start) the caller runs the block on one thread; with another Python thread alive the
    count stays, and map_tasks runs serially on the caller."""
    from tqdm import tqdm

    seen = []
    with parallel.one_thread():
        seen.append(torch.get_num_threads())
    parallel.map_tasks(lambda _: None, range(4))  # starts the task pool: still "alone"
    bar = tqdm(range(3), disable=True)  # starts tqdm's monitor thread (if not yet running)
    try:
        assert any(type(t).__name__ == "TMonitor" for t in threading.enumerate())
        with parallel.one_thread():
            seen.append(torch.get_num_threads())
    finally:
        bar.close()
    assert seen == [1, 1] and torch.get_num_threads() == 2
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        with parallel.one_thread():
            seen.append(torch.get_num_threads())
        main = threading.get_ident()
        ids = parallel.map_tasks(lambda _: (threading.get_ident(), torch.get_num_threads()), range(4))
    finally:
        release.set()
        other.join()
    assert seen[-1] == 2 and ids == [(main, 2)] * 4


def test_task_threads_never_exceeds_the_items():
    """Fails if ``min(threads, n_items)`` dropped: one item is
    run on the caller's thread, not handed an idle pool worker."""
    from mrirecon.core import parallel

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        if not parallel._alone():
            pytest.skip("other Python threads alive: task_threads is 1 by design")
        assert parallel.task_threads(1) == 1
        assert parallel.task_threads(2) == 2
        assert parallel.task_threads(0) == 1
    finally:
        torch.set_num_threads(before)
