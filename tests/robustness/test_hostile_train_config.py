"""Hostile `mrirecon train CONFIG` settings: a CT sample_rate that did nothing, a seed the trainer
could not use, mask lists of different lengths, all loss weights 0 (each refused at load, naming
the key), a diverged run reported as an internal error, and a run that made the model worse
written with exit 0 and a card that recorded no validation score."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrirecon.core.config import ConfigError, load_config
from mrirecon.training.config import TrainConfig
from mrirecon.training.validate import validate_training
from tests.helpers import tiny_ct_part, tiny_modl_config, tiny_mri_folders

@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> dict[str, Path]:
    return tiny_mri_folders(tmp_path_factory.mktemp("cfg_mri"))


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A LoDoPaB-layout part of 6 phantom images, 32 x 32, 48 views."""
    return tiny_ct_part(tmp_path_factory.mktemp("cfg_ct"), 6)


def _checked(tmp_path: Path, **changes) -> TrainConfig:
    """``validate_training`` of a config file whose keys are ``changes`` over a minimal one (no
    data are read at load)."""
    cfg = {"name": "t", "output_dir": str(tmp_path / "out"),
           "data": {"train": str(tmp_path / "tr"), "val": str(tmp_path / "va")},
           "model": {"name": "modl"}}
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        where = cfg
        for part in section.split("__") if section else ():
            where = where.setdefault(part, {})
        where[name] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return validate_training(load_config(TrainConfig, path), str(path))


# ---- F1: data.sample_rate with data.modality: ct --------------------------------------------------


def test_ct_sample_rate_keeps_a_seeded_fraction_of_the_images(ct, tmp_path):
    """sample_rate 0.5 trained on all images (the card said 0.5 and counted them all)."""
    from mrirecon.training.run import build_datasets

    cfg = _checked(tmp_path, seed=7, data__train=str(ct), data__val=str(ct), data__modality="ct",
                   data__sample_rate=0.5, model__name="primal_dual")
    train, val = build_datasets(cfg)
    # MRITrainingSet's rule (SliceDataset): round(n * rate) of n drawn by default_rng(seed)
    expected = np.sort(np.random.default_rng(7).choice(6, size=3, replace=False)).tolist()
    assert train.indices == expected
    assert len(val) == 6  # validation scores every image, as for MRI
    assert [train.get(k, mask_seed=0).fname for k in range(len(train))] == [
        f"train_{i:05d}" for i in expected]  # the images trained on are the ones drawn


def test_a_ct_sample_rate_that_keeps_no_image_is_refused(ct):
    from mrirecon.training.data_ct import CTTrainingSet

    with pytest.raises(ValueError, match=r"sample_rate 0.01 kept none of the 6 images"):
        CTTrainingSet(ct, sample_rate=0.01)


@pytest.mark.parametrize("kind", ["MRITrainingSet", "AcquiredMRISet", "CTTrainingSet"])
@pytest.mark.parametrize(("arg", "value"), [
    ("max_slices", 0), ("max_slices", -1), ("max_slices", 1.5), ("max_slices", True),
    ("sample_rate", 2.0), ("sample_rate", float("nan")), ("sample_rate", 0), ("sample_rate", "1")])
def test_training_sets_built_from_python_refuse_a_subset_they_cannot_take(kind, arg, value, mri,
                                                                         ct):
    """The config's load checks these; a training set built in Python took them: max_slices 0
    was "every slice used has all-zero k-space", -1 dropped the last slice silently, and a
    sample_rate of 2 or NaN kept every slice."""
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.data_ct import CTTrainingSet

    cls, folder = {"MRITrainingSet": (MRITrainingSet, mri["train"]),
                   "AcquiredMRISet": (AcquiredMRISet, mri["train"]),
                   "CTTrainingSet": (CTTrainingSet, ct)}[kind]
    with pytest.raises(ValueError, match=rf"^{kind}: {arg} must be"):
        cls(folder, **{arg: value})


def test_a_ct_training_sample_refuses_a_mask_seed_that_is_no_integer(ct):
    """MRITrainingSet takes fastMRI's tuple seeds; the CT set seeds one generator: a tuple was
    "int() argument must be a string, ... not 'tuple'", naming nothing."""
    from mrirecon.training.data_ct import CTTrainingSet

    ds = CTTrainingSet(ct)
    with pytest.raises(TypeError, match=r"CTTrainingSet.get: mask_seed must be an integer .*"
                                        r"got \(1, 2\)"):
        ds.get(0, mask_seed=(1, 2))
    assert ds.get(0, mask_seed=np.int64(3)).fname == ds.get(0, mask_seed=3).fname


# ---- F4, F5, F6: refused at load, naming the key --------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32, 2**45])
def test_a_seed_outside_0_to_2_32_is_refused_at_load(seed, tmp_path):
    """-1: numpy's "expected non-negative integer" naming no key; 2**45: accepted, then
    "Overflow when unpacking long long" at step 1 after config.yaml was written."""
    with pytest.raises(ConfigError, match=r"c\.yaml: seed: must be an integer in "
                                          r"\[0, 4294967295\] .*, got " + str(seed)):
        _checked(tmp_path, seed=seed)


def test_the_largest_seed_is_accepted(tmp_path):
    assert _checked(tmp_path, seed=2**32 - 1).seed == 2**32 - 1


def test_mask_lists_of_different_lengths_are_refused_at_load(tmp_path):
    """zip() kept the shorter list; the mask function then failed naming no key."""
    with pytest.raises(ConfigError, match=r"data\.mask\.center_fractions: 1 value for 2 "
                                          r"data\.mask\.accelerations; give one per acceleration"):
        _checked(tmp_path, data__mask__center_fractions=[0.08], data__mask__accelerations=[4, 8])


def test_all_loss_weights_zero_are_refused_at_load(tmp_path):
    """ReconstructionLoss refused them after the data sets were built, dumping a dataclass."""
    with pytest.raises(ConfigError, match=r"c\.yaml: loss: the weights loss\.ssim, .* are all 0"):
        _checked(tmp_path, loss__ssim=0.0)


def test_zero_image_weights_with_ssdu_are_accepted(tmp_path):
    cfg = _checked(tmp_path, loss__ssim=0.0, loss__ssdu={"ratio": 0.4}, data__maps="espirit")
    assert cfg.loss.ssdu is not None


# ---- F3: a run diverging to NaN -------------------------------------------------------------------


def test_a_diverged_run_is_a_user_error_naming_the_rate(mri, tmp_path, monkeypatch):
    """Was: FloatingPointError, printed as "internal error ... report it", exit 1."""
    from mrirecon.training.run import train_from_config
    from mrirecon.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "_train_step", lambda self: (setattr(self, "step", self.step + 1),
                                                              float("nan"))[1])
    out = tmp_path / "out"
    path = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, max_steps=2)
    with pytest.raises(ValueError, match=r"loss became nan at step 1: the training diverged; "
                                         r"lower optim\.lr \(now 0\.001\) or set optim\.grad_clip "
                                         r"\(now None\)") as err:
        train_from_config(path, progress=False)
    assert not isinstance(err.value, ArithmeticError)
    assert not (out / "model.pt").exists()


# ---- F2: a run that made the model worse ----------------------------------------------------------


def _run_with_scores(mri, tmp_path, monkeypatch, scores):
    """A tiny run whose successive validations score ``scores`` dB: (card, warnings)."""
    from mrirecon.training import run

    calls = iter(scores)
    monkeypatch.setattr(run, "make_validate_fn", lambda val_set: lambda model, device: {
        "NMSE": 0.1, "PSNR": next(calls), "SSIM": 0.5})  # validate_model(...).mean()
    out = tmp_path / "out"
    path = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, max_steps=4)  # val at 2, 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.train_from_config(path, progress=False)
    card = yaml.safe_load((out / "model.yaml").read_text())
    return card, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("scores, worse", [
    ([20.0, 12.5], r"final val PSNR \(step 4\) 12.5 dB < 20 dB at step 2"),
    ([-30.0, -218.0], r"final val PSNR \(step 4\) -218 dB < 0 dB \(an all-zero image"),
])
def test_a_run_that_made_the_model_worse_is_warned_and_noted(mri, tmp_path, monkeypatch, scores,
                                                             worse):
    """Was: model.pt and a card with no validation score, exit 0, no word (CT lr 0.1: -218 dB)."""
    card, caught = _run_with_scores(mri, tmp_path, monkeypatch, scores)
    val = card["training"]["validation"]["psnr"]
    assert val["first"] == {"step": 2, "value": scores[0]}
    assert val["last"] == {"step": 4, "value": scores[1]}
    assert val["best"] == {"step": 2, "value": scores[0]}
    assert len(caught) == 1
    assert re.search(worse, caught[0])
    assert "lower optim.lr (now 0.001)" in caught[0]
    assert any("made the model worse" in k for k in card["known_failures"])


def test_the_weights_are_written_before_the_warning_under_warnings_as_errors(mri, tmp_path,
                                                                              monkeypatch):
    """Under ``-W error`` (``PYTHONWARNINGS=error``, pytest's ``filterwarnings = error``) the
    warning is raised. Was: raised before ``save_model``, so a finished run left no model.pt
    or model.yaml and said "internal error", though the weights are written all the same."""
    from mrirecon.training import run

    calls = iter([20.0, 12.5])
    monkeypatch.setattr(run, "make_validate_fn", lambda val_set: lambda model, device: {
        "NMSE": 0.1, "PSNR": next(calls), "SSIM": 0.5})
    out = tmp_path / "out"
    path = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, max_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="made the model worse|final val PSNR"):
            run.train_from_config(path, progress=False)
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert (out / "model.pt").stat().st_size > 0
    assert any("made the model worse" in k for k in card["known_failures"])


def test_a_run_that_improved_records_its_curve_without_a_warning(mri, tmp_path, monkeypatch):
    card, caught = _run_with_scores(mri, tmp_path, monkeypatch, [38.0, 41.0])
    val = card["training"]["validation"]
    assert val["psnr"]["best"] == {"step": 4, "value": 41.0}
    assert val["ssim"]["last"] == {"step": 4, "value": 0.5}
    # the zero-filled images of the 4x validation slices (19.0 dB on this data)
    assert 10 < val["baseline"]["PSNR"] < 38.0
    assert caught == []
    assert not any("made the model worse" in k for k in card["known_failures"])


def test_a_run_no_better_than_its_input_is_warned_and_noted(mri, tmp_path, monkeypatch):
    """A model that improved (1 -> 2 dB) but stays below the zero-filled image of the same
    validation slices passed as trained: the card recorded its curve, nothing said that the
    input scored more (E2E-VarNet after 90 CPU minutes: 0.05 dB above zero-filled)."""
    card, caught = _run_with_scores(mri, tmp_path, monkeypatch, [1.0, 2.0])
    base = card["training"]["validation"]["baseline"]
    assert base["method"] == "zero_filled" and base["PSNR"] > 10 and 0 < base["SSIM"] <= 1
    assert len(caught) == 1
    assert re.search(r"no better than its input: final val PSNR \(step 4\) 2 dB <= "
                     rf"{base['PSNR']:.4g} dB of zero_filled", caught[0])
    assert any("no better than its input" in k for k in card["known_failures"])


# ---- F7: settings that change nothing -------------------------------------------------------------


@pytest.mark.parametrize("changes, key", [
    ({"data__modality": "ct", "model__name": "primal_dual", "data__mask__accelerations": [8],
      "data__mask__center_fractions": [0.04]}, "data.mask.accelerations"),
    ({"data__modality": "ct", "model__name": "primal_dual", "data__maps": "espirit"}, "data.maps"),
    ({"data__ct_views": 30}, "data.ct_views"),
    ({"data__ct_photons": 1000.0}, "data.ct_photons"),
    ({"loss__ssdu": {"ratio": 0.4}, "loss__l1": 1.0, "data__maps": "espirit"}, "loss.l1"),
    ({"loss__discriminator_lr": 0.5}, "loss.discriminator_lr"),
    ({"optim__lr_gamma": 0.5}, "optim.lr_gamma"),
    ({"optim__lr_step": 100, "optim__max_steps": 50}, "optim.lr_step"),
])
def test_a_setting_that_changes_nothing_is_warned_naming_the_key(changes, key, tmp_path):
    """Each was accepted without a word (data.num_workers alone warned)."""
    with pytest.warns(FutureWarning) as caught:
        _checked(tmp_path, **changes)
    lines = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert [line for line in lines if f"c.yaml: {key}: " in line and "no" in line], lines


@pytest.mark.parametrize("changes", [
    {},
    {"data__modality": "ct", "model__name": "primal_dual", "data__ct_views": 30},
    {"optim__lr_step": 10, "optim__max_steps": 50, "optim__lr_gamma": 0.5},
    {"loss__adversarial": 0.01, "loss__discriminator_lr": 0.5},
    {"loss__ssdu": {"ratio": 0.4}, "loss__ssim": 0.0, "data__maps": "espirit"},
])
def test_settings_that_act_are_not_warned(changes, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        _checked(tmp_path, **changes)


def test_the_shipped_config_whose_rate_never_decays_says_so():
    """train_modl_brain_sim.yaml: lr_step 480 over max_steps 350 (its weights were trained so)."""
    from mrirecon.training.validate import inert_settings

    path = Path(__file__).parents[2] / "mrirecon" / "pipelines" / "train_modl_brain_sim.yaml"
    lines = inert_settings(load_config(TrainConfig, path))
    assert lines == ["optim.lr_step: 480 >= optim.max_steps 350: the rate never decays "
                     "(optim.lr_gamma 0.1 is never applied); the run trains at optim.lr 0.001 "
                     "throughout"]


def test_a_batch_larger_than_the_training_slices_is_warned(mri, tmp_path):
    """``optim.batch_size: 50`` on a handful of training slices trained with each slice drawn
    many times per step, without a word (it needs the data, so it is said once they are read)."""
    from mrirecon.training import run

    out = tmp_path / "out"
    path = tiny_modl_config(tmp_path, mri["train"], mri["val"], out, max_steps=1,
                            optim={"lr": 1e-3, "max_steps": 1, "batch_size": 50})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.train_from_config(path, progress=False)
    said = [str(w.message) for w in caught if "optim.batch_size: 50 is more than the" in str(w.message)]
    assert len(said) == 1 and "training slices: every step repeats slices" in said[0], said


@pytest.mark.parametrize("rank, said", [(None, 1), ("0", 1), ("1", 0)])
def test_settings_that_change_nothing_are_warned_by_rank_0_only(rank, said, tmp_path,
                                                                  monkeypatch):
    """Under torchrun every rank loaded the config and repeated its warnings, naming no rank;
    rank 0 says them for the job (the card records them either way)."""
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    if rank is not None:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _checked(tmp_path, optim__lr_step=500, optim__max_steps=50)
    lines = [str(w.message) for w in caught if "the rate never decays" in str(w.message)]
    assert len(lines) == said, lines


def test_ssdu_view_parts_below_two_is_refused_at_load(tmp_path):
    """Fails if validate.py ``_at_least(..., view_parts, 2)`` -> ``1``: one view subset leaves
    the CT self-supervised loss no held-out views (input and loss views are the same set)."""
    from mrirecon.core.config import ConfigError

    ok = _checked(tmp_path, loss__ssim=0.0, loss__ssdu={"ratio": 0.4, "view_parts": 2},
                    data__modality="ct", model__name="primal_dual")
    assert ok.loss.ssdu.view_parts == 2
    with pytest.raises(ConfigError, match=r"loss\.ssdu\.view_parts"):
        _checked(tmp_path, loss__ssim=0.0, loss__ssdu={"ratio": 0.4, "view_parts": 1},
                   data__modality="ct", model__name="primal_dual")


@pytest.mark.parametrize("ssdu", [False, True])
def test_build_datasets_validation_set_is_fixed_and_capped(tmp_path, ssdu):
    """Fails if run.py: the self-supervised validation ``AcquiredMRISet(..., train=False)`` ->
    ``train=True``: validation then drew a fresh mask per slice and skipped the reference-scale
    check and if ``max_slices=cfg.val_max_slices`` dropped from the MRI validation set: the
    cap was ignored and validation ran over every slice."""
    from mrirecon.training.run import build_datasets
    from tests.helpers import tiny_mri_folders

    d = tiny_mri_folders(tmp_path)  # val: 1 volume x 2 slices
    changes = {"data__train": str(d["train"]), "data__val": str(d["val"]), "data__maps": "walsh",
               "val_max_slices": 1}
    if ssdu:
        changes.update(loss__ssim=0.0, loss__ssdu={"ratio": 0.4})
    train, val = build_datasets(_checked(tmp_path, **changes))
    assert train.train is True and val.train is False
    assert len(val) == 1 and len(train) == 4


def test_config_checkpointing_reaches_the_model(tmp_path):
    """Fails if run.py ``params.setdefault("checkpointing", True)`` dropped: ``checkpointing:
    true`` in a training config must build the model with gradient checkpointing (the memory
    saving the user asked for); an explicit ``model.params.checkpointing`` wins."""
    from mrirecon.training.run import build_model_from_config

    small = {"iterations": 2, "layers": 3, "features": 8, "cg_iterations": 2}
    assert build_model_from_config(_checked(tmp_path, checkpointing=True,
                                              model__params=small)).checkpointing is True
    assert build_model_from_config(_checked(tmp_path, model__params=small)).checkpointing is False
    assert build_model_from_config(_checked(
        tmp_path, checkpointing=True, model__params={**small, "checkpointing": False})).checkpointing is False


def test_a_validation_folder_outside_the_training_range_is_warned(ct, tmp_path):
    """Fails if a CT validation folder at another dose (or size, beam, views) than the training
    folder trains without a word: its PSNR picked the best state and went into the card."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.training.run import train_from_config

    simulate_ct_dataset(tmp_path / "val", geometry="parallel", views=48, photons=100.0, size=32,
                        seed=7, samples=1, part="validation", sources="phantom")
    cfg = {"name": "t", "output_dir": str(tmp_path / "out"), "seed": 0, "device": "cpu",
           "data": {"train": str(ct), "val": str(tmp_path / "val"), "modality": "ct"},
           "model": {"name": "primal_dual", "params": {"iterations": 1}},
           "optim": {"lr": 1e-3, "max_steps": 1, "batch_size": 1}, "loss": {"mse": 1.0},
           "val_every": 1, "checkpoint_every": 1, "tensorboard": False}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.warns(RuntimeWarning, match=r"data\.val: the validation data lie outside the "
                                             r"training data's range: photons \[100\.0, 100\.0\] "
                                             r"\(training: \[4096\.0, 4096\.0\]\); their "
                                             r"scores go into the card \(first / best / last; "
                                             r"model\.pt is the last state\)"):
        train_from_config(path, progress=False)  # it said the PSNR "picks the best state"
