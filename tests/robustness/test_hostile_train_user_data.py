"""Hostile user data and output folders for `mrirecon train CONFIG.yaml`: each case trained (or
resumed) with exit 0 and a result that was not what the config described. Now the run refuses,
naming the file and the field, or says what it did."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import pytest
import torch
import yaml

from mrirecon.core.config import ConfigError
from mrirecon.training.config import MaskConfig
from mrirecon.training.run import train_from_config
from tests.helpers import TINY_MODL, TINY_MODL_MASK, tiny_mri_folders, tiny_modl_config

MODL, MASK = TINY_MODL, TINY_MODL_MASK


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return tiny_mri_folders(tmp_path_factory.mktemp("train_user_data"))


def _config(tmp_path: Path, folders: dict, out: Path, val: Path | None = None,
            **changes) -> Path:
    """A 4-step tiny MoDL config (``val``: another validation folder) as ``tmp_path/t.yaml``."""
    return tiny_modl_config(tmp_path, folders["train"], val or folders["val"], out, **changes)


def _step(out: Path) -> int:
    return int(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"])


# ---- 1. a fresh run into another run's output folder ------------------------------------------


def test_a_fresh_run_into_another_runs_outputs_is_refused_naming_them(tmp_path, data):
    """Was: the fresh run (lr 0.01, other data) wrote its config.yaml beside the earlier run's
    checkpoint, model.pt and model.yaml; interrupted and resumed, it continued the earlier run's
    checkpoint (step 6, its optimiser state at lr 0.001) and described the mix as the new run."""
    out = tmp_path / "run"
    path = _config(tmp_path, data, out)
    train_from_config(path, progress=False)
    before = {p: (out / p).read_bytes() for p in ("config.yaml", "model.pt", "model.yaml",
                                                   "checkpoints/last.pt", "train_log.csv")}
    with pytest.raises(ConfigError) as err:
        train_from_config(path, ["optim.lr=0.01"], progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{path}: output_dir: {out} holds the outputs of an earlier training run")
    assert "optim.lr: 0.001 -> 0.01" in msg
    assert "checkpoints/last.pt, model.pt, model.yaml" in msg and "--resume" in msg
    assert {p: (out / p).read_bytes() for p in before} == before  # nothing written or removed


def test_resume_compares_with_the_config_the_checkpoint_was_made_with(tmp_path, data):
    """config.yaml replaced by another config (a fresh run of an older version wrote it at its
    start, then was interrupted): --resume compared the new config with itself and continued the
    checkpoint with its old learning rate while the logs said 0.01."""
    out = tmp_path / "run"
    path = _config(tmp_path, data, out)
    train_from_config(path, ["optim.max_steps=2"], progress=False)
    other = yaml.safe_load((out / "config.yaml").read_text())
    other["optim"]["lr"] = 0.01
    (out / "config.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(ConfigError) as err:
        train_from_config(path, ["optim.lr=0.01"], resume=True, progress=False)
    assert str(err.value).startswith(f"{path}: optim.lr: --resume continues the run in {out} "
                                     "whose config differs (optim.lr: 0.001 -> 0.01)")
    assert _step(out) == 2
    # the checkpoint's own config resumes (config.yaml is rewritten with it)
    assert train_from_config(path, resume=True, progress=False).steps == 4


def test_a_fresh_run_of_the_same_config_starts_afresh_even_when_interrupted(tmp_path, data,
                                                                           monkeypatch):
    """A restart of the same config replaces the earlier run: interrupted during its second
    step, before its first periodic checkpoint, --resume starts from this run's own state after
    step 1, which the interrupt saved (was: the earlier run's checkpoint at its last step), and
    the result is that of an uninterrupted run, bit for bit."""
    from mrirecon.training.trainer import Trainer

    straight = train_from_config(_config(tmp_path, data, tmp_path / "straight"), progress=False)
    out = tmp_path / "run"
    path = _config(tmp_path, data, out)
    train_from_config(path, ["optim.max_steps=6"], progress=False)
    assert _step(out) == 6
    real = Trainer._train_step

    def interrupted(self):
        if self.step == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_from_config(path, progress=False)
    monkeypatch.setattr(Trainer, "_train_step", real)
    assert _step(out) == 1  # this run's, not the earlier run's step 6
    resumed = train_from_config(path, resume=True, progress=False)
    # the history is the whole run's: step 1 read back from train_log.csv (the card's
    # validation record comes from it), steps 2-4 logged by the resumed process
    assert resumed.steps == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert yaml.safe_load((out / "model.yaml").read_text())["training"]["steps"] == 4


# ---- 2. the files a folder holds ----------------------------------------------------------------


def test_training_reads_the_files_run_reads_and_names_subfolders(tmp_path, data, caplog):
    """a.h5, b.hdf5, c.H5 and sub/d.h5: supervised training read a.h5 only, SSDU a.h5 and c.H5,
    while `mrirecon run` takes all three and warns about the subfolder."""
    from mrirecon.pipeline.runner import expand_inputs
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.data_acquired import AcquiredMRISet

    src = sorted(data["train"].glob("*.h5"))[0]
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.h5", "b.hdf5", "c.H5", "sub/d.h5"):
        shutil.copy(src, folder / name)
    (folder / "notes.txt").write_text("not data")
    run_reads = [p.name for p in expand_inputs([str(folder)])]
    assert run_reads == ["a.h5", "b.hdf5", "c.H5"]
    mask = MaskConfig(**MASK)
    for make in (lambda: MRITrainingSet(folder, mask),
                 lambda: AcquiredMRISet(folder, mask, maps="espirit")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
            dataset = make()
        assert [p.name for p in dataset.source_files()] == run_reads
        assert len(dataset) == 6
        warned = [r.getMessage() for r in caplog.records if r.name == "mrirecon.train"]
        assert warned == [f"data folder {folder}: 1 subfolder(s) not searched (sub); training "
                          "reads the files at the top of data.train / data.val only: move theirs "
                          "up to train on them"]


def test_a_file_supervised_training_cannot_read_is_refused_not_dropped(tmp_path, data, ct_dir):
    """A CT sinogram (``.hdf5``) in an MRI folder was left out by the ``*.h5`` glob."""
    from mrirecon.training.data import MRITrainingSet

    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(sorted(data["train"].glob("*.h5"))[0], folder / "a.h5")
    ct = sorted(ct_dir.glob("observation_*.hdf5"))[0]
    shutil.copy(ct, folder / ct.name)
    with pytest.raises(ValueError, match=rf"MRITrainingSet: {folder / ct.name} holds ct_hdf5 "
                                         r"data, not fastMRI-layout k-space"):
        MRITrainingSet(folder, MaskConfig(**MASK))


# ---- 3. a reference on another scale than its k-space -------------------------------------------


@pytest.mark.parametrize("factor, shown", [(1e-3, "0.001x"), (1e3, "1e+03x")])
def test_a_reference_on_another_scale_is_refused_naming_the_file_and_factor(tmp_path, data,
                                                                            factor, shown):
    """Reference and attrs/max multiplied by 1e-3 (so the max check passes): trained with the
    loss stuck at 0.99999, exit 0, while `mrirecon run` warned 'the reference's scale is
    0.00103x the reconstruction's'."""
    from mrirecon.training.data import MRITrainingSet

    folder = tmp_path / "train"
    shutil.copytree(data["train"], folder)
    bad = sorted(folder.glob("*.h5"))[1]
    with h5py.File(bad, "r+") as h5:
        h5["reconstruction_rss"][...] = h5["reconstruction_rss"][()] * factor
        h5.attrs["max"] = float(h5.attrs["max"]) * factor
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MaskConfig(**MASK), train=True)
    assert str(err.value).startswith(f"MRITrainingSet: {bad}: reconstruction_rss: its scale is "
                                     f"{shown} that of the zero-filled image of its k-space")
    assert len(MRITrainingSet(data["train"], MaskConfig(**MASK))) == 4  # honest files pass


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_a_ct_ground_truth_on_another_scale_is_refused_naming_the_file(tmp_path, factor):
    """A LoDoPaB-layout ground truth x 1000 beside its sinogram (same ``mu_max_per_m``): a
    primal-dual model trained on it with exit 0 (4 steps, loss 0.45-0.64), learning to map data
    to images 1000x too bright. The check projects the ground truth at a few views."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.training.data_ct import CTTrainingSet

    common = {"views": 24, "size": 24, "sources": "phantom", "samples": 2}
    for geometry in ("parallel", "fan"):  # honest files pass, at the dose of each
        simulate_ct_dataset(tmp_path / geometry, geometry=geometry, seed=1, part="train",
                            photons=64, **common)
        assert len(CTTrainingSet(tmp_path / geometry, views=8, photons=32)) == 2
    bad = tmp_path / "parallel" / "ground_truth_train_000.hdf5"
    with h5py.File(bad, "r+") as h5:
        h5["data"][...] = h5["data"][()] * factor  # a conversion in other units: every image
    with pytest.raises(ValueError) as err:
        CTTrainingSet(tmp_path / "parallel", views=8)
    assert str(err.value).startswith(
        f"CTTrainingSet: {bad}: data: image 0 projects to ")
    assert "observation_train_000.hdf5" in str(err.value)
    said = float(str(err.value).split(" projects to ", 1)[1].split("x ", 1)[0])
    # the factor, to the phantom's projection error at 24 detectors (0.997-1.000x when honest)
    assert abs(said / factor - 1) < 0.05, said


def test_a_self_supervised_validation_reference_on_another_scale_is_refused(tmp_path):
    """Self-supervised (SSDU) training validates against the references its validation files
    hold. A reference and attrs/max x 1000 gave val_PSNR 8.9 dB and SSIM 0.04 for a model whose
    loss was fine, exit 0: scores of nothing. The check judges undersampled k-space by its
    zero-filled image."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.training.data_acquired import AcquiredMRISet

    kw = {"coils": 2, "size": (32, 32), "acceleration": 8, "center_fraction": 0.08,
          "mask_type": "random", "resolution": 2}
    files = simulate_mri_dataset(tmp_path / "val", volumes=1, slices=2, seed=4, **kw)
    assert len(AcquiredMRISet(tmp_path / "val", train=False)) == 2  # honest 8x files pass
    with h5py.File(files[0], "r+") as h5:
        h5["reconstruction_rss"][...] = h5["reconstruction_rss"][()] * 1e3
        h5.attrs["max"] = float(h5.attrs["max"]) * 1e3
    with pytest.raises(ValueError) as err:
        AcquiredMRISet(tmp_path / "val", train=False)
    assert str(err.value).startswith(f"AcquiredMRISet: {files[0]}: reconstruction_rss: its "
                                     "scale is ")
    assert len(AcquiredMRISet(tmp_path / "val", train=True)) == 2  # training ignores references


# ---- 4. validation data that are training data --------------------------------------------------


def test_validation_files_that_are_training_files_are_refused(tmp_path, data):
    """data.val == data.train (or a copy of a training file in the validation folder) trained
    with exit 0 and validation metrics that read as held-out ones."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        train_from_config(_config(tmp_path, data, out, val=data["train"]), progress=False)
    files = sorted(data["train"].glob("*.h5"))
    assert str(err.value).startswith(
        f"{tmp_path / 't.yaml'}: data.val: 2 of the 2 validation file(s) are also training files "
        f"(data.train): {files[0]}; {files[1]}; validation must score data")
    copy = tmp_path / "val_copy"
    shutil.copytree(data["val"], copy)
    shutil.copy(files[1], copy / "renamed.h5")
    with pytest.raises(ConfigError, match=rf"data\.val: 1 of the 2 validation file\(s\) are also "
                                          rf"training files \(data\.train\): {copy / 'renamed.h5'} "
                                          rf"has the content of {files[1]}"):
        train_from_config(_config(tmp_path, data, out, val=copy), progress=False)
    assert not out.exists()
    # without validation nothing is scored on them
    assert train_from_config(_config(tmp_path, data, out, val=data["train"], val_every=0),
                             ["optim.max_steps=1"], progress=False).steps == 1


def test_ct_validation_images_that_are_training_images_are_refused(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    common = {"geometry": "parallel", "views": 24, "size": 24, "sources": "phantom", "samples": 2}
    simulate_ct_dataset(tmp_path / "train", seed=1, part="train", **common)
    simulate_ct_dataset(tmp_path / "val", seed=1, part="validation", **common)  # the same images
    path = tmp_path / "ct.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ct", "output_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"train": str(tmp_path / "train"), "val": str(tmp_path / "val"), "modality": "ct"},
        "model": {"name": "primal_dual", "params": {"iterations": 1, "n_primal": 2, "n_dual": 1,
                                                     "features": 4}},
        "optim": {"max_steps": 1}, "val_every": 1, "tensorboard": False}))
    with pytest.raises(ConfigError, match=r"data\.val: 2 of the 2 validation file\(s\) .*"
                                          r"observation_validation_000\.hdf5 has the content of "
                                          r".*observation_train_000\.hdf5"):
        train_from_config(path, progress=False)
    simulate_ct_dataset(tmp_path / "val2", seed=2, part="validation", **common)
    assert train_from_config(path, [f"data.val={tmp_path / 'val2'}"], progress=False).steps == 1


# ---- 5. the card of the trained model -----------------------------------------------------------


def test_the_card_states_the_training_range_and_run_warns_outside_it(tmp_path, data, caplog):
    """model.yaml held only `model: {name, params}`: `mrirecon run` with these 32 x 32, 2-coil,
    4x weights on 48 x 40 data at 8x said nothing."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.model_range import range_warnings
    from mrirecon.pipeline.runner import run_pipeline
    from mrirecon.training.weights import load_pretrained

    out = tmp_path / "run"
    path = _config(tmp_path, data, out)
    train_from_config(path, ["optim.max_steps=2"], progress=False)
    card = load_pretrained(out / "model.pt").model_card
    rng = card["training_range"]
    assert rng["matrix"] == {"min": [32, 32], "max": [32, 32]} and rng["coils"] == [2, 2]
    # 4x with a 5-column centre on 32 columns: 9, 8 or 7 columns kept by the offset drawn
    assert rng["accelerations"] == [round(32 / 9, 4), round(32 / 7, 4)]
    assert rng["maps_crop"] == [0.0, 0.0]  # trained on crop-0 ESPIRiT maps
    assert card["data"]["train"] == {"folder": str(data["train"].resolve()), "volumes": 2,
                                     "slices": 4}
    assert card["training"]["command"] == (f"mrirecon train {path} --threads "
                                           f"{torch.get_num_threads()} --set optim.max_steps=2")
    assert card["training"]["config"]["optim"]["lr"] == 0.001 and card["training"]["steps"] == 2
    assert range_warnings(card, matrix=(32, 32), coils=2, acceleration=4.0, maps_crop=0.0) == []

    big = tmp_path / "big"
    simulate_mri_dataset(big, volumes=1, slices=1, coils=2, size=(48, 40), seed=3, resolution=2)
    config, text = load_pipeline("mri_modl_brain_sim", [
        f"reconstruct.weights={out / 'model.pt'}", "undersample.enabled=true",
        "undersample.accelerations=[8]", "undersample.center_fractions=[0.08]",
        "export.formats=[hdf5]", "evaluate.enabled=false", "report.enabled=false"])
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        assert run_pipeline(config, [str(big)], tmp_path / "out", progress=False,
                            config_text=text) == 0
    warned = [r.getMessage() for r in caplog.records if "training range" in r.getMessage()]
    name = "file_brain_SAGT1_sim3_0000.h5: slice 0: "  # said per input, naming it, the slice
    # and the user's weights file, whose card sits beside it
    assert any(m.startswith(name + "matrix 48 x 40 is outside the model.pt training range 32 x 32 "
                            ".. 32 x 32") for m in warned), warned
    assert any(m.startswith(name + "acceleration 8 is outside the model.pt training range 3.5556 "
                            ".. 4.5714") and m.endswith(f"(see its card {out / 'model.yaml'}, "
                                                        "'known failures')") for m in warned), warned


# ---- 6. --resume with fewer steps than the checkpoint's -----------------------------------------


def test_resume_with_max_steps_below_the_checkpoint_is_refused(tmp_path, data):
    """optim.max_steps 2 on a 4-step checkpoint skipped the loop and rewrote model.pt with the
    4-step weights, exit 0."""
    out = tmp_path / "run"
    path = _config(tmp_path, data, out)
    train_from_config(path, progress=False)
    model = (out / "model.pt").read_bytes()
    with pytest.raises(ValueError) as err:
        train_from_config(path, ["optim.max_steps=2"], resume=True, progress=False)
    assert str(err.value).startswith(f"checkpoint {out / 'checkpoints' / 'last.pt'}: step: 4 is "
                                     "past optim.max_steps 2")
    assert (out / "model.pt").read_bytes() == model
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["max_steps"] == 4
    # the same number of steps: nothing to train, the same weights
    assert train_from_config(path, resume=True, progress=False).steps == 4
