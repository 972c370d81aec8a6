"""Which registry models `mrirecon train CONFIG` trains (audit s32/c13, findings 1-2).

Seven registry names passed the config's validation, then, with the data read and
``output_dir/config.yaml`` written, failed at step 1 with "internal error ... report it": the
backbones (``model(x)``, not ``model(y, op)``), ``density_weighted`` / ``learned_maps`` (need a
``nufft_sense`` operator; the config's MRI data are Cartesian) and ``ldamp`` (needs a real i.i.d.
Gaussian matrix). ``admm_csnet`` with an even ``kernel_size`` changed the image size and failed
there too. ``staged_ct`` trains, but not by its documented recipe, and nothing said so.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from mrirecon.core.config import ConfigError, load_config
from mrirecon.models.registry import MODEL_MODALITY, available_models, build_model, model_keywords
from mrirecon.training.config import TrainConfig
from mrirecon.training.validate import (NOT_TRAINED_BY_CONFIG, not_trained_by_config,
                                        validate_training)
from tests.models.problems import ct_problem, mri_problem
from tests.models.tiny import tiny_model, tiny_problem

#: what each refusal must point to (the command or model that does train it)
POINTS_TO = {
    "dncnn": r"model.params.denoiser: dncnn .*`mrirecon train denoiser`",
    "unet": r"model.params.denoiser: unet .*`mrirecon train denoiser`",
    "resnet": r"model.params.denoiser: resnet .*`mrirecon train denoiser`",
    "density_weighted": r"`mrirecon train radial` .*--weighting density, the default",
    "learned_maps": r"`mrirecon train radial` .*--maps learned --weighting none",
    "ldamp": r"gaussian_matrix.*from Python",
}


def _config(tmp_path: Path, name: str, modality: str = "mri", **params) -> Path:
    """A minimal training config (its data folders do not exist: nothing may read them)."""
    cfg = {"name": "t", "output_dir": str(tmp_path / "out"),
           "data": {"train": str(tmp_path / "tr"), "val": str(tmp_path / "va"),
                    "modality": modality},
           "model": {"name": name, "params": params}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _validated(path: Path) -> TrainConfig:
    return validate_training(load_config(TrainConfig, path), str(path))


@pytest.mark.parametrize("modality", ["mri", "ct"])
@pytest.mark.parametrize("name", sorted(POINTS_TO))
def test_a_model_train_config_cannot_train_is_refused_before_any_data_are_read(
        name, modality, tmp_path, monkeypatch):
    """Was: validation passed, the data were read, config.yaml written, then "internal error:
    TypeError: DnCNN.forward() takes 2 positional arguments but 3 were given" at step 1."""
    import mrirecon.training.run as run

    monkeypatch.setattr(run, "build_datasets", lambda cfg: pytest.fail("data read before validation"))
    path = _config(tmp_path, name, modality)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: model.name: '{name}' "
                                          rf".*{POINTS_TO[name]}") as err:
        run.train_from_config(path)
    assert err.value.key == "model.name"
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_refused_models_are_those_the_trainer_cannot_call_on_a_configs_data():
    """The refusals follow the code: a registry model is refused iff ``model(y, op)`` (the
    trainer's call) fails on every kind of data its modality allows in a config -- Cartesian
    k-space through a SENSE operator (MRITrainingSet) or a sinogram through a CT projector."""
    data = {"mri": mri_problem(), "ct": ct_problem()}
    for name in available_models():
        kind = MODEL_MODALITY.get(name)
        runs = []
        for modality in [kind] if kind else ["mri", "ct"]:
            x, y, op = data[modality]
            try:
                out = tiny_model(name)(y, op)
            except TypeError:
                runs.append(False)
                continue
            assert out.shape == x.shape, (name, modality)
            runs.append(True)
        assert (not_trained_by_config(name) is None) == any(runs), name
    assert set(NOT_TRAINED_BY_CONFIG) == set(POINTS_TO)


def test_what_the_refusals_point_to_exists():
    """Each way out the messages name works as they say."""
    from mrirecon.training.radial import MODELS, radial_architecture

    # backbones: the denoiser of pnp_admm / pnp_hqs / red by name; pnp_dpir has its own
    for backbone in ("dncnn", "unet", "resnet"):
        for pnp in ("pnp_admm", "pnp_hqs", "red"):
            assert {"denoiser", "denoiser_params"} <= model_keywords(pnp)
            assert not_trained_by_config(pnp) is None
        x, y, op = mri_problem()
        model = build_model("pnp_hqs", denoiser=backbone, iterations=1,
                            denoiser_params={"in_chans": 2, "out_chans": 2})
        assert model(y, op).shape == x.shape
    assert "denoiser" not in model_keywords("pnp_dpir")
    assert "pnp_dpir (its own DnCNN denoiser)" in not_trained_by_config("dncnn")
    # train radial: --model modl / gram_varnet; the default weighting gives density_weighted,
    # --maps learned --weighting none a bare learned_maps
    assert sorted(MODELS) == ["gram_varnet", "modl"]
    assert radial_architecture("modl")[0] == "density_weighted"
    assert radial_architecture("gram_varnet", "learned", "none")[0] == "learned_maps"
    assert radial_architecture("modl", "learned")[0] == "density_weighted"  # wraps learned_maps
    from mrirecon.training.radial import train_radial

    assert inspect.signature(train_radial).parameters["weighting"].default == "density"
    # ldamp: from Python with gaussian_matrix (mrirecon.operators)
    x, y, op = tiny_problem("dense")
    assert tiny_model("ldamp")(y, op).shape == x.shape


@pytest.mark.parametrize("name, modality, theirs", [("primal_dual", "mri", "mri"),
                                                     ("modl", "ct", "ct")])
def test_the_modality_refusal_lists_only_models_train_config_trains(name, modality, theirs,
                                                                    tmp_path):
    """Was: "train an MRI model (cascade, density_weighted, gram_varnet, learned_maps, ...)"."""
    with pytest.raises(ConfigError, match=r"train an? (MRI|CT) model \((.*)\)") as err:
        _validated(_config(tmp_path, name, modality))
    listed = re.search(r"model \(([^)]*)\) or set", str(err.value)).group(1).split(", ")
    assert listed == sorted(n for n, m in MODEL_MODALITY.items()
                            if m == theirs and not_trained_by_config(n) is None)
    assert not {"density_weighted", "learned_maps"} & set(listed)


@pytest.mark.parametrize("name, params", [("modl", {}), ("pnp_admm", {"denoiser": "dncnn"}),
                                          ("pnp_dpir", {}), ("admm_csnet", {"kernel_size": 5})])
def test_models_train_config_trains_still_pass(name, params, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _validated(_config(tmp_path, name, **params))


# ---- admm_csnet: an even kernel_size ----------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [2, 4, 0])
def test_admm_csnet_refuses_a_kernel_size_that_changes_the_image_size(kernel_size):
    """Was: built, then "The size of tensor a (33) must match the size of tensor b (32)" at the
    first call (in training: "internal error")."""
    from mrirecon.models.unrolled.admm_csnet import ADMMCSNet

    message = rf"ADMMCSNet: kernel_size must be odd .* got {kernel_size}$"
    with pytest.raises(ValueError, match=message):
        ADMMCSNet(iterations=1, kernel_size=kernel_size)
    with pytest.raises(ValueError, match=message):
        build_model("admm_csnet", iterations=1, kernel_size=kernel_size)
    from mrirecon.core.config import ConfigError
    from mrirecon.training.config import DataConfig, ModelConfig, TrainConfig
    from mrirecon.training.run import build_model_from_config

    cfg = TrainConfig(name="t", output_dir="o", data=DataConfig(train="tr", val="va"),
                      model=ModelConfig("admm_csnet", {"iterations": 1, "kernel_size": kernel_size}))
    with pytest.raises(ConfigError, match="model.params: ADMMCSNet: kernel_size must be odd"):
        build_model_from_config(cfg)  # the config's key named, as for an unknown parameter


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_admm_csnet_with_an_odd_kernel_size_keeps_the_image_size(kernel_size):
    x, y, op = mri_problem()
    model = build_model("admm_csnet", iterations=2, num_filters=3, num_points=11,
                        kernel_size=kernel_size)
    out = model(y, op)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


# ---- staged_ct: trained end to end, not by its recipe ------------------------------------------


def test_staged_ct_in_a_training_config_warns_that_it_is_not_its_recipe(tmp_path):
    """Was: trained end to end on whole images with the fixed lam, no warning."""
    path = _config(tmp_path, "staged_ct", "ct")
    with pytest.warns(UserWarning, match=rf"^{re.escape(str(path))}: model.name: 'staged_ct' is "
                                         r"trained here end to end.*`mrirecon train staged_ct`"):
        _validated(path)
    # the recipe it describes is ct_staged's: 128 x 128 patches, lam grid, ensemble on validation
    from mrirecon.training import ct_staged

    assert inspect.signature(ct_staged.train_staged_ct).parameters["patch"].default == 128
    assert callable(ct_staged.tune_lam) and callable(ct_staged.tune_ensemble)
    with warnings.catch_warnings():  # other CT models: no such warning
        warnings.simplefilter("error")
        _validated(_config(tmp_path, "primal_dual", "ct"))
