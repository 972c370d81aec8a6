"""One Cartesian mask function shared by threads (a notebook validating files in parallel,
``MRITrainingSet.get(i, mask_seed)`` from a thread pool): a seeded call must give the mask of a
serial call, i.e. fastMRI's, and the unseeded (training) stream must go on as if the calls had
been made one after the other. Pickled and copied mask functions keep their stream."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from mrirecon.sampling import MASK_TYPES, create_mask_for_mask_type, file_seed
from tests.threads_race import run_threads

THREADS = 4
WIDTH = 368
# the magic masks need integer accelerations; every type takes (0.08, 4) and (0.04, 8)
FRACTIONS, ACCELERATIONS = (0.08, 0.04), (4, 8)


@pytest.mark.parametrize("kind", sorted(MASK_TYPES))
def test_seeded_masks_from_threads_equal_serial_masks(kind):
    """Was: the seeded call reseeded the instance's one RandomState, drew and restored it, with
    no lock: another thread's reseed or restore landed between the draws (3 of 400 random and
    21 of 400 equispaced_fraction masks were not the file's fastMRI mask)."""
    fn = create_mask_for_mask_type(kind, FRACTIONS, ACCELERATIONS, seed=0)
    seeds = [file_seed(f"file{i}.h5") for i in range(200)]
    serial = {s: fn(WIDTH, seed=s) for s in seeds}

    def job(shift):
        order = seeds[shift:] + seeds[:shift]  # every thread its own order
        return [(s, fn(WIDTH, seed=s)) for s in order for _ in range(3)]

    results = run_threads([lambda k=k: job(50 * k) for k in range(THREADS)])
    wrong = sum(not torch.equal(mask, serial[s]) for got in results for s, mask in got)
    assert wrong == 0, f"{kind}: {wrong} of {THREADS * 3 * len(seeds)} seeded masks differ from serial"


@pytest.mark.parametrize("kind", ["random", "equispaced_fraction"])
def test_unseeded_stream_goes_on_as_if_the_calls_were_serial(kind):
    """Two threads draw unseeded (training) masks while three others make seeded calls: the
    unseeded masks are the first ones of the stream seeded at construction, each drawn whole,
    and the stream continues after them. Was: a seeded call's restore put back a state saved
    before another thread's draws (and a draw between another's reseed and restore came from
    the file's seed), so the stream repeated or lost masks."""
    n = 600
    fn = create_mask_for_mask_type(kind, FRACTIONS, ACCELERATIONS, seed=123)
    twin = create_mask_for_mask_type(kind, FRACTIONS, ACCELERATIONS, seed=123)
    expected = [twin(WIDTH) for _ in range(2 * n)]

    def unseeded():
        return [fn(WIDTH) for _ in range(n)]

    def seeded():
        return [fn(WIDTH, seed=file_seed(f"file{i}.h5")) for i in range(2 * n)]

    results = run_threads([unseeded, seeded, unseeded, seeded, seeded])
    drawn = results[0] + results[2]
    key = lambda m: m.numpy().tobytes()  # noqa: E731
    assert sorted(map(key, drawn)) == sorted(map(key, expected)), (
        f"{kind}: the unseeded masks drawn in threads are not the stream's first {2 * n}")
    assert torch.equal(fn(WIDTH), twin(WIDTH)), f"{kind}: the unseeded stream did not go on"


def test_a_seeded_call_leaves_the_owned_generator_untouched():
    """A seeded call draws from a fresh ``RandomState(seed)`` (fastMRI's numbers, compared with
    fastMRI in ``test_sampling.py``): the instance's generator object and its state stay."""
    fn = create_mask_for_mask_type("random", FRACTIONS, ACCELERATIONS, seed=5)
    rng = fn.rng
    state = rng.get_state()
    first = fn(WIDTH, seed=file_seed("file1000000.h5"))
    assert fn.rng is rng
    after = rng.get_state()
    assert state[0] == after[0] and (state[1] == after[1]).all() and state[2:] == after[2:]
    fresh = create_mask_for_mask_type("random", FRACTIONS, ACCELERATIONS, seed=99)
    assert torch.equal(first, fresh(WIDTH, seed=file_seed("file1000000.h5")))
    with pytest.raises(ValueError, match="RandomMask: seed must be"):
        fn(WIDTH, seed=-1)


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_pickled_and_copied_mask_functions_keep_their_stream_and_lock(clone):
    """The per-instance lock is not pickled; the copy gets its own and goes on with the
    original's stream (seeded and unseeded calls alike), also from threads."""
    fn = create_mask_for_mask_type("equispaced_fraction", FRACTIONS, ACCELERATIONS, seed=7)
    fn(WIDTH)
    make = pickle.loads if clone == "pickle" else copy.deepcopy
    other = make(pickle.dumps(fn)) if clone == "pickle" else make(fn)
    assert other._lock is not fn._lock
    assert torch.equal(other(WIDTH), fn(WIDTH))
    assert torch.equal(other(WIDTH), fn(WIDTH))
    seed = file_seed("file1000001.h5")
    assert torch.equal(other(WIDTH, seed=seed), fn(WIDTH, seed=seed))
    expected = [fn(WIDTH) for _ in range(40)]
    drawn = run_threads([lambda: [other(WIDTH) for _ in range(20)] for _ in range(2)])
    key = lambda m: m.numpy().tobytes()  # noqa: E731
    assert sorted(map(key, drawn[0] + drawn[1])) == sorted(map(key, expected))
    shallow = copy.copy(fn)  # shares the generator object, not the lock
    assert shallow._lock is not fn._lock and shallow.rng is fn.rng
