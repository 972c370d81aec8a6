"""Hostile training data and settings: what `mrirecon train` reads must describe itself, or the
run stops naming the file and the field (a training that learns nothing, exit 0, is the failure
these guard against)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet

MASK = MaskConfig("equispaced_fraction", (0.25,), (2,))


def _folder(tmp_path, mri_file, edit=None):
    folder = tmp_path / "train"
    folder.mkdir()
    path = folder / mri_file.name
    shutil.copy(mri_file, path)
    if edit is not None:
        with h5py.File(path, "r+") as h5:
            edit(h5)
    return folder, path


def _peak(h5) -> float:
    return float(h5["reconstruction_rss"][()].max())


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_an_honest_max_attribute_is_the_loss_data_range(factor, tmp_path, mri_file):
    def edit(h5):
        h5.attrs["max"] = factor * _peak(h5)

    folder, path = _folder(tmp_path, mri_file, edit)
    with h5py.File(path) as h5:
        expected = float(h5.attrs["max"])
    sample = MRITrainingSet(folder, MASK, train=False).get(1)
    assert float(sample.max_value) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("value, message", [
    # SSIM's constants grow as max^2: at 1000x the loss was 3e-5 instead of 0.37 and its gradient
    # 1e-4 of its size, so nothing was learned, exit 0
    (lambda peak: 1000 * peak, r"attrs/max: .* is 1e\+03x the maximum .* of its reconstruction_rss"),
    (lambda peak: 0.5 * peak, r"attrs/max: .* is 0.5x the maximum"),
    # NaN: "cg: the right-hand side holds NaN" steps later (the weights had become NaN), no file
    (lambda peak: float("nan"), r"attrs/max: nan is no data range"),
    (lambda peak: -1.0, r"attrs/max: -1 is no data range"),
])
def test_a_max_attribute_that_does_not_describe_the_reference_is_refused(value, message, tmp_path,
                                                                         mri_file):
    def edit(h5):
        h5.attrs["max"] = value(_peak(h5))

    folder, path = _folder(tmp_path, mri_file, edit)
    data = MRITrainingSet(folder, MASK, train=True)
    with pytest.raises(ValueError, match=message) as err:
        data.get(0, mask_seed=0)
    assert str(path) in str(err.value)


def test_a_nan_training_reference_is_refused_naming_the_file_and_slice(tmp_path, mri_file):
    def edit(h5):
        ref = h5["reconstruction_rss"][()]
        ref[1, 3, 4] = np.nan
        h5["reconstruction_rss"][...] = ref

    folder, path = _folder(tmp_path, mri_file, edit)
    data = MRITrainingSet(folder, MASK, train=True)
    with pytest.raises(ValueError, match=r"reconstruction_rss: 1 NaN or Inf values \(slice\(s\) 1\)") as err:
        data.get(0, mask_seed=0)  # slice 0 is finite: the volume's reference is checked whole
    assert str(path) in str(err.value)


def _train_config(tmp_path, mri_file):
    """A 1-step tiny VarNet config on a copy of ``mri_file``: ``(config path, output_dir)``."""
    import yaml

    from tests.helpers import TINY_VARNET, TRAIN_MASK

    folder, _ = _folder(tmp_path, mri_file)
    out = tmp_path / "out"
    cfg = {"name": "t", "output_dir": str(out), "seed": 0, "device": "cpu",
           "data": {"train": str(folder), "val": str(folder), "mask": TRAIN_MASK},
           "model": {"name": "varnet", "params": dict(TINY_VARNET)},
           "optim": {"lr": 1e-3, "max_steps": 1, "batch_size": 1}, "val_every": 0,
           "checkpoint_every": 1}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, out


def test_resume_from_a_checkpoint_of_another_model_is_refused_naming_it(tmp_path, mri_file):
    """A checkpoint whose run left no config.yaml (copied in, or written by an older version)
    resumed by another model: an internal error from load_state_dict listing some hundred keys
    ("Missing key(s) in state_dict: ..."), or, same model with other model.params, "size mismatch
    for ..." — and config.yaml had already been replaced by the refused config, so the next
    --resume with the checkpoint's own config was refused as 'config differs'."""
    from mrirecon.training.run import train_from_config

    path, out = _train_config(tmp_path, mri_file)
    train_from_config(path, progress=False)
    (out / "config.yaml").unlink()
    ckpt = out / "checkpoints" / "last.pt"
    # data.maps as varnet's run had it (modl's default, ESPIRiT, needs more centre columns than
    # this tiny file's mask holds: refused before the checkpoint is looked at)
    modl = ["model.name=modl", "model.params={iterations: 1, layers: 2, features: 4}",
            "data.maps=learned"]
    with pytest.raises(ValueError) as err:
        train_from_config(path, modl, resume=True, progress=False)
    assert str(err.value) == (f"checkpoint {ckpt}: model_name: it holds a 'varnet' model, but the "
                              "config trains 'modl' (model.name): resume with the config of that "
                              "run, or start a new output_dir")
    with pytest.raises(ValueError, match=r"model: its weights do not fit varnet with this config's "
                                         r"model.params \(0 missing, 0 unexpected, \d+ of another "
                                         r"shape; first: .*\(4, 2, 3, 3\) in the checkpoint, "
                                         r"\(2, 2, 3, 3\) here\)") as err:
        train_from_config(path, ["model.params.chans=2"], resume=True, progress=False)
    assert str(ckpt) in str(err.value)
    assert not (out / "config.yaml").exists()  # neither refused config replaced the record
    assert train_from_config(path, ["optim.max_steps=2"], resume=True, progress=False).steps == 2


def test_resume_without_a_checkpoint_says_it_starts_afresh(tmp_path, mri_file, caplog):
    """--resume into an output_dir without checkpoints/last.pt (a mistyped output_dir, a deleted
    checkpoint) trained from step 0 without a word, exit 0; now a warning names the path."""
    import logging

    from mrirecon.training.run import train_from_config

    path, out = _train_config(tmp_path, mri_file)
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        assert train_from_config(path, resume=True, progress=False).steps == 1
    assert [r.getMessage() for r in caplog.records if r.name == "mrirecon.train"] == [
        f"--resume: no checkpoint {out / 'checkpoints' / 'last.pt'}; training starts at step 0"]


def test_training_files_without_references_are_named_before_training(tmp_path, mri_file):
    # before: the set was built and training started; the file failed only when its slice was
    # first drawn ("MRITrainingSet: b.h5 has no reference"), possibly many steps in
    folder = tmp_path / "train"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    shutil.copy(mri_file, folder / "b.h5")
    with h5py.File(folder / "b.h5", "r+") as h5:
        del h5["reconstruction_rss"]
    with pytest.raises(ValueError) as info:
        MRITrainingSet(folder, MASK)
    assert str(info.value) == (
        f"MRITrainingSet: 1 of the 2 file(s) used in {folder} have no reference "
        f"(reconstruction_rss): {folder / 'b.h5'}; supervised training and validation compare "
        "with it: remove them, or train self-supervised (loss.ssdu), which needs no reference")
    # validation limited to the first file's slices does not read b.h5's
    assert len(MRITrainingSet(folder, MASK, train=False, max_slices=2)) == 2


def test_zero_periods_mean_only_at_the_last_step(tmp_path):
    """``log_every: 0`` / ``checkpoint_every: 0`` passed the config check (>= 0, as ``val_every``,
    whose 0 means "only at the end") and then stopped the run after its first step with
    "ZeroDivisionError: integer modulo by zero", naming no key."""
    import csv

    import yaml

    from tests.helpers import TINY_VARNET, TRAIN_MASK, simulated_mri_split
    from mrirecon.training.run import train_from_config

    data = simulated_mri_split(tmp_path / "data", val_slices=1)
    out = tmp_path / "run"
    cfg = {"name": "zero", "output_dir": str(out), "seed": 0, "device": "cpu",
           "data": {"train": str(data["train"]), "val": str(data["val"]), "mask": TRAIN_MASK},
           "model": {"name": "varnet", "params": dict(TINY_VARNET)},
           "optim": {"lr": 1e-3, "max_steps": 3, "batch_size": 1},
           "log_every": 0, "val_every": 0, "checkpoint_every": 0, "tensorboard": False}
    path = tmp_path / "zero.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train_from_config(path, progress=False)
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [3]  # the last step only
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_checkpoint_with_weights_the_model_lacks_is_refused_naming_them(tmp_path):
    from mrirecon.training.checkpoint import check_model_state

    model = torch.nn.Linear(2, 2)
    state = {**model.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"\(0 missing, 1 unexpected, 0 of another shape; "
                                         r"first: extra\.weight\)"):
        check_model_state(tmp_path / "last.pt", {"model": state}, model, "linear")
