"""Seeded model builds from threads: torch's CPU generator is one per process, so seeded builds
(``seeded_init``) and the builds of weight loading (``build_to_load``) take one re-entrant lock
and run one at a time; a thread's seeded build then has the weights of a serial build."""

from __future__ import annotations

import multiprocessing
import sys
import threading

import pytest
import torch

from mrirecon.models import build_model
from mrirecon.models.init import seeded_init
from mrirecon.training.weights import build_to_load
from tests.threads_race import run_threads

THREADS = 4
BUILDS = 120  # per thread: a race shows in a few dozen builds
VN = dict(iterations=8, num_filters=4, kernel_size=5, num_rbf=7)  # init_seed 0 by default


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_builds_and_loads_from_threads_equal_serial_builds():
    """Was: each build forked and reseeded the process-wide CPU generator with no lock, so one
    thread's reseed or restore landed among another's draws: 20 of 40 VN builds from a 4-thread
    pool had other weights than a serial build, and the generator could be left in a seeded
    state after all builds (a restore putting back another build's seeded state)."""
    serial = {seed: _weights(build_model("vn", **VN, init_seed=seed)) for seed in (0, 1)}
    torch.manual_seed(1234)
    before = torch.get_rng_state()

    def builds(k):
        out = []
        for i in range(BUILDS):
            seed = (i + k) % 2
            if k == 3:  # weight loading: a build in a fork, which re-enters the lock for VN's seed
                out.append((seed, _weights(build_to_load("vn", {**VN, "init_seed": seed}))))
            else:
                out.append((seed, _weights(build_model("vn", **VN, init_seed=seed))))
        return out

    results = run_threads([lambda k=k: builds(k) for k in range(THREADS)])
    wrong = sum(not _same(w, serial[seed]) for got in results for seed, w in got)
    assert wrong == 0, f"{wrong} of {THREADS * BUILDS} seeded builds from threads differ from serial"
    assert torch.equal(torch.get_rng_state(), before), "the global CPU generator was left moved"


def test_seeded_init_nests_and_restores_in_threads():
    """``seeded_init`` inside ``seeded_init`` (a denoiser built by name inside a seeded PnP
    model) re-enters the lock; the draws of each block are those of a serial run."""
    def randn():  # in pieces: many points where another thread may run
        return torch.cat([torch.randn(4) for _ in range(16)])

    def draw():
        with seeded_init(3):
            a = randn()
            with seeded_init(4):
                b = randn()
            c = randn()
        return a, b, c

    ref = draw()
    results = run_threads([lambda: [draw() for _ in range(BUILDS)] for _ in range(THREADS)])
    wrong = sum(not all(torch.equal(x, y) for x, y in zip(got, ref))
                for per_thread in results for got in per_thread)
    assert wrong == 0, f"{wrong} of {THREADS * BUILDS} nested seeded draws from threads differ"


def _build_in_child(queue) -> None:
    queue.put(_same(_weights(build_model("vn", **VN)), _weights(build_model("vn", **VN))))


@pytest.mark.skipif(sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs the fork start method")
def test_a_process_forked_while_another_thread_builds_can_build():
    """The lock is made anew in a forked child: a fork (a DataLoader worker) while another
    thread held it would otherwise leave it held for good, and the child's first seeded build
    would hang."""
    from mrirecon.models.init import build_lock

    held, release = threading.Event(), threading.Event()

    def hold():
        with build_lock():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_build_in_child, args=(queue,))
        child.start()
        child.join(60)
        alive = child.is_alive()
        if alive:
            child.kill()
            child.join()
        assert not alive, "a seeded build in a process forked while the build lock was held hung"
        assert child.exitcode == 0 and queue.get(timeout=10) is True
    finally:
        release.set()
        holder.join()
