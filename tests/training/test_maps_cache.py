"""The coil-map cache of the MRI training sets: bounded by a byte budget (``data.maps_cache_mb``),
least recently used maps evicted and recomputed bit for bit, 0 caches nothing, one log line when
the budget is first reached. Was: one ``(C, H, W)`` complex64 map kept per (file, slice) for the
whole run (fastMRI: about 27 MB a slice, 1 TB an epoch)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from mrirecon.core.config import ConfigError, load_config
from mrirecon.data.simulate_mri import simulate_mri_dataset
from mrirecon.training.config import MaskConfig, TrainConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.data_acquired import AcquiredMRISet
from mrirecon.training.maps_cache import MapsCache, default_budget_bytes
from mrirecon.training.validate import validate_training

MASK = MaskConfig(type="equispaced_fraction", center_fractions=(0.16,), accelerations=(4,))
COILS, SIZE = 3, 32
MAP_BYTES = COILS * SIZE * SIZE * 8  # one slice's (C, H, W) complex64 maps


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 volumes x 5 slices of 3-coil 32 x 32 k-space: 20 slices, 24 KiB of maps each."""
    root = tmp_path_factory.mktemp("maps_cache") / "train"
    simulate_mri_dataset(root, volumes=4, slices=5, coils=COILS, size=(SIZE, SIZE), seed=4)
    return root


def _sets(folder: Path, cache: MapsCache):
    return [MRITrainingSet(folder, MASK, "espirit", train=True, maps_cache=cache),
            AcquiredMRISet(folder, MASK, "espirit", train=True, maps_cache=cache)]


def _get(ds, i: int):
    return ds.get(i, mask_seed=i) if isinstance(ds, MRITrainingSet) else ds.get(i)


@pytest.mark.parametrize("which", [0, 1], ids=["MRITrainingSet", "AcquiredMRISet"])
def test_cached_bytes_stay_within_the_budget_over_many_slices(folder, which):
    budget = int(3.5 * MAP_BYTES)  # room for 3 slices' maps
    cache = MapsCache(budget)
    ds = _sets(folder, cache)[which]
    assert len(ds) == 20
    for epoch in range(2):
        for i in range(len(ds)):
            _get(ds, i)
            assert cache.nbytes <= budget
            assert len(cache) == min(i + 1 + 20 * epoch, 3)
    assert cache.nbytes == 3 * MAP_BYTES


@pytest.mark.parametrize("which", [0, 1], ids=["MRITrainingSet", "AcquiredMRISet"])
def test_a_map_recomputed_after_eviction_equals_the_evicted_one(folder, which):
    cache = MapsCache(2 * MAP_BYTES)
    ds = _sets(folder, cache)[which]
    first = _get(ds, 0).maps.clone()
    assert len(cache) == 1
    again = _get(ds, 0).maps
    assert again.data_ptr() == _get(ds, 0).maps.data_ptr()  # a hit: the cached tensor
    for i in range(1, 6):
        _get(ds, i)
    assert len(cache) == 2 and cache.nbytes == 2 * MAP_BYTES  # slice 0's maps were evicted
    recomputed = _get(ds, 0).maps
    assert recomputed.data_ptr() != again.data_ptr()
    assert recomputed.dtype == first.dtype and torch.equal(recomputed, first)  # bit for bit


def test_a_budget_of_0_caches_nothing_and_gives_the_same_maps(folder):
    kept = MRITrainingSet(folder, MASK, "espirit", train=True, maps_cache=MapsCache(1 << 30))
    none = MRITrainingSet(folder, MASK, "espirit", train=True, maps_cache=MapsCache(0))
    for i in range(4):
        assert torch.equal(none.get(i, mask_seed=i).maps, kept.get(i, mask_seed=i).maps)
    assert len(none.maps_cache) == 0 and none.maps_cache.nbytes == 0
    assert len(kept.maps_cache) == 4 and kept.maps_cache.nbytes == 4 * MAP_BYTES


def test_least_recently_used_is_evicted_first():
    cache = MapsCache(3 * 400)
    blocks = {k: torch.full((50,), float(k), dtype=torch.float64) for k in range(5)}  # 400 B each
    for k in range(3):
        cache.put(k, blocks[k])
    assert cache.get(0) is blocks[0]  # 0 is now the most recently used
    cache.put(3, blocks[3])  # evicts 1, the least recently used
    assert 1 not in cache and all(k in cache for k in (0, 2, 3))
    cache.put(4, torch.zeros(200, dtype=torch.float64))  # larger than the whole budget: not kept
    assert 4 not in cache and cache.nbytes == 3 * 400


def test_one_log_line_when_the_budget_is_first_reached(folder, caplog):
    cache = MapsCache(int(2.5 * MAP_BYTES))
    ds = MRITrainingSet(folder, MASK, "espirit", train=True, maps_cache=cache)
    with caplog.at_level(logging.INFO, logger="mrirecon.train"):
        for i in range(len(ds)):
            ds.get(i, mask_seed=i)
    lines = [r for r in caplog.records if "maps_cache_mb" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in lines]
    assert "recomputed" in lines[0].getMessage()


def test_a_pickled_cache_starts_empty_with_the_same_budget():
    """A DataLoader worker (spawn) gets a copy of the set: its own cache, the same budget."""
    import pickle

    cache = MapsCache(4096)
    cache.put("a", torch.zeros(100, dtype=torch.float32))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.budget == 4096 and len(copy) == 0 and copy.nbytes == 0
    copy.put("b", torch.zeros(10))
    assert "b" in copy


def test_the_default_budget_is_at_most_2_gib_and_an_eighth_of_the_memory(monkeypatch):
    from mrirecon.io.errors import memory_bytes

    assert default_budget_bytes() == min(2048 * 2**20, memory_bytes() // 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks on this node share it
    assert default_budget_bytes() == min(2048 * 2**20, memory_bytes() // 8 // 4)


# ---- the config key ------------------------------------------------------------------------------


def _config(tmp_path: Path, folder: Path, **data) -> Path:
    cfg = {"name": "t", "output_dir": str(tmp_path / "out"), "device": "cpu",
           "data": {"train": str(folder), "val": str(folder), "maps": "espirit",
                    "mask": {"center_fractions": [0.16], "accelerations": [4]}, **data},
           "model": {"name": "modl"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_config_key_sets_one_budget_shared_by_train_and_val(tmp_path, folder):
    from mrirecon.training.run import build_datasets

    cfg = validate_training(load_config(TrainConfig, _config(tmp_path, folder, maps_cache_mb=1.5)))
    assert cfg.data.maps_cache_mb == 1.5
    train, val = build_datasets(cfg)
    assert train.maps_cache is val.maps_cache and train.maps_cache.budget == int(1.5 * 2**20)
    cfg = load_config(TrainConfig, _config(tmp_path, folder))  # not given: the default
    assert cfg.data.maps_cache_mb is None
    assert build_datasets(cfg)[0].maps_cache.budget == default_budget_bytes()
    cfg = load_config(TrainConfig, _config(tmp_path, folder, maps_cache_mb=0))
    assert build_datasets(cfg)[0].maps_cache.budget == 0


@pytest.mark.parametrize("value", [-1, float("nan"), "lots"])
def test_a_bad_budget_is_refused_naming_the_key(tmp_path, folder, value):
    path = _config(tmp_path, folder, maps_cache_mb=value)
    with pytest.raises(ConfigError, match=r"data\.maps_cache_mb"):
        validate_training(load_config(TrainConfig, path), str(path))


def test_a_misspelt_key_is_refused_with_did_you_mean(tmp_path, folder):
    path = _config(tmp_path, folder, maps_cache_mbs=100)
    with pytest.raises(ConfigError, match=r"maps_cache_mbs.*did you mean.*maps_cache_mb"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize("data, why", [({"maps": "learned"}, "data.maps learned"),
                                       ({"modality": "ct"}, "data.modality ct")])
def test_a_budget_that_changes_nothing_is_warned(tmp_path, folder, data, why):
    from mrirecon.training.validate import inert_settings

    cfg = load_config(TrainConfig, _config(tmp_path, folder, maps_cache_mb=64, **data))
    assert [line for line in inert_settings(cfg)
            if line.startswith("data.maps_cache_mb: 64 has no effect with " + why)]
    cfg = load_config(TrainConfig, _config(tmp_path, folder, maps_cache_mb=64))  # espirit: acts
    assert not [line for line in inert_settings(cfg) if "maps_cache_mb" in line]


def test_the_heap_is_trimmed_after_an_eviction_only(monkeypatch):
    """Dropped maps left RSS at +92 MiB over a 16 MiB budget in a heap fragmented by the maps
    still held; trimmed after each eviction, +22 MiB."""
    import mrirecon.core.memory as memory

    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    cache = MapsCache(2 * 400)
    cache.put(0, torch.zeros(50, dtype=torch.float64))
    cache.put(1, torch.zeros(50, dtype=torch.float64))
    assert calls == []
    cache.put(2, torch.zeros(50, dtype=torch.float64))
    assert calls == [1] and 0 not in cache


def test_a_budget_of_0_logs_no_budget_reached_line(caplog):
    """data.maps_cache_mb: 0 turns caching off; "its budget of 0 B is reached ... raise
    data.maps_cache_mb to keep more" would contradict the setting the user chose."""
    import logging

    from mrirecon.training.maps_cache import MapsCache

    caplog.set_level(logging.INFO, logger="mrirecon.train")
    cache = MapsCache(0)
    cache.put(0, torch.zeros(4))
    cache.put(1, torch.zeros(4))
    assert 0 not in cache and 1 not in cache
    assert not [r for r in caplog.records if "coil maps cache" in r.getMessage()]
