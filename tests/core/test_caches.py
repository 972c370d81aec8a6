"""mrirecon.clear_caches: the registry of process-wide caches, and what it frees (CT tables)."""

import importlib
import re
from pathlib import Path

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
    "mrirecon.pipeline.run_files._versions_cached", "mrirecon.pipeline.run_state._kernel32",
    "mrirecon.pipeline.code_identity.code_sha256", "mrirecon.models.backbones.fused._conv_relu_op",
    "mrirecon.training.weights._card_kind_cached", "mrirecon.functional.wavelet.wavelet_filters",
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

    assert nufft._plans.clear in caches.registered()
    assert density._CACHE.clear in caches.registered()
    traj = torch.rand(64, 2, dtype=torch.float64) - 0.5
    nufft.nufft(torch.ones(1, 16, 16, dtype=torch.complex128), traj)
    assert len(nufft._plans._entries) > 0
    mrirecon.clear_caches()
    assert len(nufft._plans._entries) == 0 and len(density._CACHE._entries) == 0
