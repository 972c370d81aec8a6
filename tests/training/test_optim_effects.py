"""Training settings that must change what is trained: ``optim.grad_clip``, ``optim.weight_decay``
and the fresh masks of every epoch (a one-line change that dropped each passed every test)."""

from __future__ import annotations

import pytest
import torch
import yaml

from mrirecon.training.run import train_from_config
from tests.helpers import TINY_MODL, TINY_MODL_MASK, tiny_mri_folders

LR = 3e-3


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tiny_mri_folders(tmp_path_factory.mktemp("k96"))


def _train(tmp_path, folders, name, **optim):
    out = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "output_dir": str(out), "seed": 5, "device": "cpu",
        "data": {"train": str(folders["train"]), "val": str(folders["val"]), "mask": TINY_MODL_MASK},
        "model": {"name": "modl", "params": dict(TINY_MODL)},
        "optim": {"lr": LR, "max_steps": 1, "batch_size": 1, **optim},
        "log_every": 1, "val_every": 0, "checkpoint_every": 100}))
    train_from_config(path, progress=False)
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)


def _max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if a[k].is_floating_point() and a[k].numel())


def test_grad_clip_limits_the_update(folders, tmp_path):
    """optim.grad_clip = 1e-12 clips every gradient to a norm far below Adam's eps (1e-8): the
    first update is ~lr * 1e-4, against ~lr per parameter unclipped. Mutant: clipping skipped,
    the two runs are bit-identical."""
    free = _train(tmp_path, folders, "free")
    clipped = _train(tmp_path, folders, "clip", grad_clip=1e-12)
    assert _max_diff(free["model"], clipped["model"]) > 0.5 * LR


def test_weight_decay_reaches_the_optimiser(folders, tmp_path):
    """optim.weight_decay is Adam's: recorded in the checkpoint's optimiser and changing the
    update (L2 of 1e3 dominates the gradient). Mutant: weight_decay=0.0 always."""
    plain = _train(tmp_path, folders, "plain")
    decayed = _train(tmp_path, folders, "decay", weight_decay=1e3)
    assert decayed["optimizer"]["param_groups"][0]["weight_decay"] == 1e3
    assert _max_diff(plain["model"], decayed["model"]) > 0.5 * LR


def test_every_epoch_draws_fresh_training_masks(folders, tmp_path, monkeypatch):
    """The trainer asks the training set for a new mask every epoch: the 4 training slices over 3
    epochs get 12 distinct mask seeds, each slice 3 (the seeds the trainer passes to
    ``MRITrainingSet.get``, recorded). Mutants: the epoch left out of ``sample_seed`` or of the
    trainer's call, the same 4 masks dealt out again every epoch."""
    from mrirecon.training.data import MRITrainingSet

    seen: list[tuple[int, object]] = []
    real = MRITrainingSet.get

    def recording(self, index, mask_seed=None):
        seen.append((index, mask_seed))
        return real(self, index, mask_seed=mask_seed)

    monkeypatch.setattr(MRITrainingSet, "get", recording)
    _train(tmp_path, folders, "masks", max_steps=12)
    assert len(seen) == 12 and len({s for _, s in seen}) == 12, seen
    per_slice: dict[int, set] = {}
    for index, seed in seen:
        per_slice.setdefault(index, set()).add(seed)
    assert sorted(len(v) for v in per_slice.values()) == [3, 3, 3, 3], per_slice
