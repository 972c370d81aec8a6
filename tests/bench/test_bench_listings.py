"""What ``mrirecon bench`` lists for an unknown method: only methods of the benchmark's modality
(audit a21, finding 2: the MRI bench listed the CT models and the CT bench the MRI
reconstructions, each then refused as "a CT model; this benchmark is MRI" and the like)."""

from __future__ import annotations

import re

import pytest

from mrirecon import recon
from mrirecon.bench import run_bench, run_ct_bench
from mrirecon.models.registry import MODEL_MODALITY, available_models
from mrirecon.recon.registry import _lookup
from mrirecon.training.weights import available_weights, model_card


def _modality(name: str) -> str | None:
    """``"mri"`` / ``"ct"`` of a method name, ``None`` for either, read from where each kind
    says it: the registry's summary, the models' table, a shipped card's model."""
    if name in recon.available():
        kind = _lookup(name).modality
        return kind if kind in ("mri", "ct") else None
    if name in available_weights():
        name = str(model_card(name)["model"]["name"]).lower().replace("-", "_")
    return MODEL_MODALITY.get(name)


def _listed(message: str) -> list[str]:
    """The method names (classical, model or shipped weights) the message names."""
    known = set(recon.available()) | set(available_models()) | set(available_weights())
    return [w for w in dict.fromkeys(re.findall(r"[A-Za-z0-9_]+", message)) if w in known]


@pytest.mark.parametrize("challenge", ["multicoil", "singlecoil", "ct"])
def test_an_unknown_method_lists_only_methods_of_the_benchmark(challenge, tmp_path):
    wanted = "ct" if challenge == "ct" else "mri"
    with pytest.raises(ValueError, match="unknown method") as err:
        if challenge == "ct":
            run_ct_bench(tmp_path, (2,), ["foo"], progress=False)
        else:
            run_bench(tmp_path, challenge=challenge, methods="foo", progress=False)
    listed = _listed(str(err.value))
    other = [m for m in listed if _modality(m) not in (None, wanted)]
    assert not other, (other, str(err.value))  # was: 3 CT models (MRI), 10 MRI methods (CT)
    # and every runnable one of its own is there: classical methods, shipped weights
    own = [m for m in [*recon.available(), *available_weights()] if _modality(m) == wanted]
    assert set(own) <= set(listed), (sorted(set(own) - set(listed)), str(err.value))


def test_a_method_of_the_other_modality_is_refused_as_such_before_loading(tmp_path, monkeypatch):
    """Named, not "unknown", and refused before any weights are read."""
    import mrirecon.bench.methods as bench_methods
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from tests.helpers import simulated_ct_dir

    mri = tmp_path / "mri"
    simulate_mri_dataset(mri, volumes=1, slices=1, coils=2, size=(32, 32), seed=1)
    ct = simulated_ct_dir(tmp_path / "ct", views=20, size=16, seed=1)

    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded for a method of the other modality")

    monkeypatch.setattr(bench_methods, "load_model", no_loading)
    with pytest.raises(ValueError, match=r"'fbp' is a CT reconstruction; this benchmark is MRI"):
        run_bench(mri, methods="fbp", progress=False)
    for name in ("staged_ct_lodopab", "primal_dual_ct_sim"):
        with pytest.raises(ValueError, match=rf"'{name}' is a CT model; this benchmark is MRI"):
            run_bench(mri, methods=name, progress=False)
    with pytest.raises(ValueError, match=r"'modl_brain_sim' is an MRI model; this benchmark is CT"):
        run_ct_bench(ct, (2,), ["modl_brain_sim"], progress=False)
