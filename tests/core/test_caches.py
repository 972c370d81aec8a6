"""mrirecon.clear_caches: the registry of process-wide caches, and what it frees (CT tables)."""

import importlib
import re
from pathlib import Path

import pytest
import torch

import mrirecon
from mrirecon.core import caches
from mrirecon.operators import ct as ct_module
from mrirecon.operators import fbp as fbp_module
from mrirecon.operators.ct_geometry import CTGeometry

CT_CACHES = (ct_module.cached_ct_operator, ct_module.projector_norm, fbp_module._interpolation_tables,
             fbp_module._weights)

#: functools caches that hold no tensors or arrays, only facts about the process (provenance,
#: library handles, a probe's answer, file metadata), which emptying would not free memory
#: with: clear_caches leaves them alone
NOT_DATA = {
    "mrirecon.core.memory._libc", "mrirecon.pipeline.run_files._git_commit",
    "mrirecon.pipeline.run_files._versions_cached", "mrirecon.core.processes._kernel32",
    "mrirecon.pipeline.code_identity.package_sha256", "mrirecon.models.backbones.fused._conv_relu_op",
    "mrirecon.io.weights._card_kind_cached", "mrirecon.functional.wavelet.wavelet_filters",
}


def test_clear_caches_empties_the_ct_projector_and_fbp_tables():
    """After FBPs on a parallel and a fan geometry every CT cache holds entries; clear_caches
    leaves none, and the FBP rebuilt from nothing equals the first one bit for bit."""
    geometries = (CTGeometry.parallel((24, 24), 21, 37),
                  CTGeometry.fan((24, 24), 21, 37, source_isocenter=60.0, source_detector=120.0))
    first = []
    for g in geometries:
        y = ct_module.cached_ct_operator(g)(torch.rand(1, 24, 24, dtype=torch.float32,
                                                       generator=torch.Generator().manual_seed(0)))
        first.append((y, fbp_module.fbp(y, g), ct_module.projector_norm(g)))
    assert all(cache.cache_info().currsize > 0 for cache in CT_CACHES)
    mrirecon.clear_caches()
    assert [cache.cache_info().currsize for cache in CT_CACHES] == [0, 0, 0, 0]
    for g, (y, x, norm) in zip(geometries, first):
        assert torch.equal(fbp_module.fbp(y, g), x)
        assert ct_module.projector_norm(g) == norm


def test_register_calls_each_clear_once_and_returns_it():
    calls = []

    def clear():
        calls.append(1)

    try:
        assert caches.register(clear) is clear
        caches.register(clear)  # a module imported twice (reload) registers once
        mrirecon.clear_caches()
        assert calls == [1]
    finally:
        caches._CLEARS.remove(clear)


def test_every_functools_cache_of_the_package_is_registered_or_holds_no_data():
    """A new ``functools.lru_cache`` of tensors must register its ``cache_clear`` (or be named in
    NOT_DATA here with its reason). Every module whose source uses ``functools`` caches is
    imported and its cached functions checked."""
    root = Path(mrirecon.__file__).parent
    names = sorted("mrirecon." + ".".join(path.relative_to(root).with_suffix("").parts)
                   for path in root.rglob("*.py") if re.search(r"functools\.(lru_)?cache\b", path.read_text()))
    assert "mrirecon.operators.ct" in names
    modules = {name: importlib.import_module(name) for name in names}  # registers on import
    registered = caches.registered()
    seen, missing = set(), []
    for name, mod in modules.items():
        for attr, value in vars(mod).items():
            if getattr(value, "__module__", None) == name and callable(getattr(value, "cache_clear", None)):
                seen.add(f"{name}.{attr}")
                if f"{name}.{attr}" not in NOT_DATA and value.cache_clear not in registered:
                    missing.append(f"{name}.{attr}")
    assert missing == [] and NOT_DATA <= seen  # no stale names either


def test_the_nufft_plans_and_density_weights_are_registered_and_cleared():
    """The two non-functools caches (bounded LRUs with a lock) are emptied by clear_caches."""
    from mrirecon.functional import density, nufft

    from mrirecon.training.maps_cache import MapsCache

    assert all(isinstance(c, caches.BoundedLRU) for c in (nufft._plans, density._CACHE,
                                                           MapsCache(0)))  # one LRU class
    assert nufft._plans.clear in caches.registered()
    assert density._CACHE.clear in caches.registered()
    traj = torch.rand(64, 2, dtype=torch.float64) - 0.5
    nufft.nufft(torch.ones(1, 16, 16, dtype=torch.complex128), traj)
    assert len(nufft._plans) > 0
    mrirecon.clear_caches()
    assert len(nufft._plans) == 0 and len(density._CACHE) == 0


# ---- the one bounded LRU (NUFFT plans, density weights, training's coil maps) ------------------


def test_bounded_lru_by_entries_evicts_the_least_recently_used():
    lru = caches.BoundedLRU(3)
    for k in range(3):
        assert lru.put(k, str(k)) == 0
    assert lru.get(0) == "0"  # now the most recently used
    assert lru.put(3, "3") == 1  # evicts 1
    assert 1 not in lru and [k in lru for k in (0, 2, 3)] == [True] * 3 and len(lru) == 3
    assert lru.get(1) is None and lru.weight == 3
    lru.put(2, "two")  # a stored key again: replaced, most recent, nothing evicted
    assert lru.get(2) == "two" and len(lru) == 3
    assert lru.put(4, "4") == 1 and 0 not in lru  # 0 was the least recent after 2's store
    lru.clear()
    assert len(lru) == 0 and lru.weight == 0


def test_bounded_lru_by_weight_keeps_within_the_limit():
    lru = caches.BoundedLRU(10, weigh=len)
    lru.put("a", "xxxx")
    lru.put("b", "xxxx")
    assert lru.weight == 8
    assert lru.put("c", "xxx") == 1 and "a" not in lru and lru.weight == 7  # 11 > 10: a goes
    lru.put("b", "x")  # replacing an entry counts its new weight only
    assert lru.weight == 4 and len(lru) == 2
    assert lru.put("d", "x" * 11) == 0  # heavier than the whole limit: not kept, nothing evicted
    assert "d" not in lru and lru.weight == 4
    lru.put("b", "x" * 11)  # a stored key's heavier value: the old value goes, the new is not kept
    assert "b" not in lru and lru.weight == 3
    assert len(caches.BoundedLRU(0)) == 0 and caches.BoundedLRU(0).put("k", 1) == 0
    with pytest.raises(ValueError, match="limit must be >= 0"):
        caches.BoundedLRU(-1)


def test_bounded_lru_discard_drops_only_the_value_it_was_given():
    """A caller that found a stale entry drops it, not what another thread stored since."""
    lru = caches.BoundedLRU(4)
    old, new = object(), object()
    lru.put("k", old)
    lru.put("k", new)  # another thread's store
    lru.discard("k", old)
    assert lru.get("k") is new
    lru.discard("k", new)
    assert "k" not in lru and lru.weight == 0
    lru.discard("missing", new)  # nothing there: nothing happens


def test_bounded_lru_shared_by_threads_stays_consistent():
    """8 threads storing, reading and discarding at once under constant eviction: no error (a
    raw KeyError came from an unlocked move_to_end), and the weight is the sum of what is held."""
    import threading

    lru = caches.BoundedLRU(64, weigh=lambda v: v[1])
    errors = []

    def work(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        try:
            for _ in range(3000):
                k = int(torch.randint(0, 40, (), generator=g))
                hit = lru.get(k)
                if hit is None:
                    lru.put(k, (k, 1 + k % 7))
                elif k % 5 == 0:
                    lru.discard(k, hit)
        except Exception as err:  # pragma: no cover - the failure reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held = [lru.get(k) for k in range(40)]
    assert lru.weight == sum(v[1] for v in held if v is not None) <= 64


def test_clear_caches_drops_the_wavelet_plans_of_every_thread():
    """The wavelet transform keeps per-thread plans with image-sized scratch buffers (sixteen:
    ~99 MB after eight complex128 shapes), which clear_caches left in place (its README says it
    "empties them all"). After transforms in this thread and in a worker thread that is still
    alive, clear_caches leaves no plan in either; the worker then transforms again (rebuilding
    its plan) and gets the same coefficients."""
    import threading

    from mrirecon.functional import wavelet

    def held() -> int:
        return sum(len(plans) for plans in wavelet.plan_dicts())

    x = torch.rand(3, 32, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mrirecon.clear_caches()
    assert held() == 0
    first = wavelet.dwt2(x, "db2", 2)
    assert torch.allclose(wavelet.idwt2(first, "db2", 2), x, atol=1e-12)  # float64, 2 levels
    go, done, out = threading.Event(), threading.Event(), {}

    def worker():
        out["before"] = wavelet.dwt2(x.to(torch.complex128), "db4", 1)
        done.set()
        go.wait(30)
        out["after"] = wavelet.dwt2(x.to(torch.complex128), "db4", 1)

    t = threading.Thread(target=worker)
    t.start()
    assert done.wait(30)
    assert held() >= 2  # this thread's db2 plans and the worker's db4 plan
    mrirecon.clear_caches()
    assert held() == 0
    go.set()
    t.join(30)
    assert torch.equal(out["after"], out["before"])
    assert torch.equal(wavelet.dwt2(x, "db2", 2), first)


def test_clearing_wavelet_plans_under_running_transforms_is_safe():
    """clear_caches from one thread while two others transform in a loop: no error, every
    result equals the one computed alone (a running transform keeps its plan)."""
    import threading

    from mrirecon.functional import wavelet

    x = torch.rand(2, 64, 64, dtype=torch.float32, generator=torch.Generator().manual_seed(2))
    want = wavelet.dwt2(x, "db4", 3)
    errors, stop = [], threading.Event()

    def work():
        try:
            while not stop.is_set():
                if not torch.equal(wavelet.dwt2(x, "db4", 3), want):
                    errors.append("differs")
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(50):
        mrirecon.clear_caches()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_clear_caches_hands_the_freed_heap_back(monkeypatch):
    """Fails if ``release_memory()`` dropped from ``clear_caches``,
    the documented second half of the function ("then hand the freed memory back")."""
    from mrirecon.core import memory

    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    caches.clear_caches()
    assert calls == [1]
