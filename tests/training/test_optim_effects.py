"""Training settings that must change what is trained: ``optim.grad_clip``, ``optim.weight_decay``
and the fresh masks of every epoch (a one-line change that dropped each passed every test)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

from mrirecon.training import trainer as T
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


def test_every_epoch_draws_fresh_training_masks():
    """Masks are a function of (seed, epoch, position): 5 slices over 4 epochs draw 20 masks
    (20 distinct seeds), each slice a new one every epoch. Mutant: the epoch left out of
    sample_seed, the same 5 masks are dealt out again each epoch."""
    n, seed, epochs = 5, 7, 4
    T.epoch_order.cache_clear()
    fake = SimpleNamespace(train_set=range(n), world=1, rank=0,
                           cfg=SimpleNamespace(seed=seed, optim=SimpleNamespace(batch_size=1)))
    seeds, per_index = [], {}
    for step in range(n * epochs):
        (index, epoch, pos), = T.Trainer._positions(fake, step)
        s = T.sample_seed(seed, epoch, pos)
        seeds.append(s)
        per_index.setdefault(index, []).append(s)
    assert len(set(seeds)) == n * epochs
    assert all(len(set(v)) == epochs for v in per_index.values())
