"""Ctrl-C or SIGTERM during a training step checkpoints the state before that step, so that
``--resume`` loses no finished step and still gives the uninterrupted run's weights bit for bit
(was: the steps since the last periodic checkpoint were lost, up to ``checkpoint_every``)."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from tests.helpers import TINY_MODL, TINY_MODL_MASK, tiny_mri_folders
from mrirecon.io.errors import Terminated
from mrirecon.training import trainer as T
from mrirecon.training.run import train_from_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return tiny_mri_folders(tmp_path_factory.mktemp("interrupt"))


def _config(path, folders, out):
    path.write_text(yaml.safe_dump({
        "name": "t", "output_dir": str(out), "seed": 5, "device": "cpu",
        "data": {"train": str(folders["train"]), "val": str(folders["val"]), "mask": TINY_MODL_MASK},
        # MoDL's denoiser has batch norm: its running statistics move in every forward pass
        "model": {"name": "modl", "params": dict(TINY_MODL)},
        "optim": {"lr": 3e-3, "max_steps": 4, "batch_size": 2},
        "log_every": 1, "val_every": 0, "checkpoint_every": 100}))
    return path


def _state(out):
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    return ckpt["step"], ckpt["model"], ckpt["optimizer"]["state"]


def _interrupt_after_step(monkeypatch, n: int) -> None:
    """A ``KeyboardInterrupt`` once step ``n``'s update is done (its log or save under way)."""
    real, calls = T.Trainer._train_step, {"n": 0}

    def step_then_interrupt(self):
        out = real(self)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(T.Trainer, "_train_step", step_then_interrupt)


def _interrupt_in_sample(monkeypatch, n: int, error: BaseException) -> None:
    """``error`` raised inside the ``n``-th sample's loss (batch 2: n = 6 is step 3's second)."""
    real, calls = T.magnitude_for_target, {"n": 0}

    def interrupted(x, target):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return real(x, target)

    monkeypatch.setattr(T, "magnitude_for_target", interrupted)


def test_an_interrupt_within_a_step_checkpoints_the_step_before(folders, tmp_path, monkeypatch,
                                                                  caplog):
    train_from_config(_config(tmp_path / "a.yaml", folders, tmp_path / "a"), progress=False)
    step_a, model_a, optim_a = _state(tmp_path / "a")
    assert step_a == 4

    calls = {"n": 0}
    real = T.magnitude_for_target

    def interrupted(x, target):  # after the forward pass of step 3's second sample
        calls["n"] += 1
        if calls["n"] == 5:  # step 3's first sample: MoDL's forward pass draws no random number
            calls["rng"] = torch.get_rng_state()
        if calls["n"] == 6:
            torch.rand(3)  # as a dropout layer would: the step drew from the RNG
            raise Terminated("SIGTERM")  # a KeyboardInterrupt, as Ctrl-C's
        return real(x, target)

    cfg = _config(tmp_path / "b.yaml", folders, tmp_path / "b")
    monkeypatch.setattr(T, "magnitude_for_target", interrupted)
    caplog.set_level(logging.WARNING, "mrirecon")
    with pytest.raises(KeyboardInterrupt):
        train_from_config(cfg, progress=False)
    step, model, _ = _state(tmp_path / "b")
    assert step == 2
    rng = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["rng"]
    assert torch.equal(rng["torch"], calls["rng"])  # the RNG as it was before step 3  # checkpoint_every 100: nothing was on disk before the interrupt
    assert any("interrupted during step 3" in r.getMessage() for r in caplog.records)
    assert any(k.endswith("running_mean") for k in model)  # batch norm's statistics are there

    monkeypatch.setattr(T, "magnitude_for_target", real)
    train_from_config(cfg, resume=True, progress=False)
    step_b, model_b, optim_b = _state(tmp_path / "b")
    assert step_b == 4
    assert model_a.keys() == model_b.keys()
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)  # buffers included
    for i in optim_a:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(optim_a[i][name], optim_b[i][name])


def test_an_interrupt_after_the_update_saves_no_mixed_state(folders, tmp_path, monkeypatch):
    """Stopped once a step's update is done (its validation, log or save under way), the state
    before the step is gone and the one after it not yet final: nothing is saved (a checkpoint
    of the new weights with the old batch-norm statistics and RNG would resume silently off)."""
    _interrupt_after_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_from_config(_config(tmp_path / "b.yaml", folders, tmp_path / "b"), progress=False)
    assert not (tmp_path / "b" / "checkpoints" / "last.pt").exists()  # checkpoint_every 100


@pytest.mark.parametrize("where", ["step", "after_step"])
def test_an_interrupt_the_last_checkpoint_covers_still_says_resume(folders, tmp_path, monkeypatch,
                                                                    caplog, where):
    """With ``checkpoint_every: 1`` the checkpoint of step 2 already holds the state before step
    3: an interrupt there saved nothing new and said only "terminated", no ``--resume`` line;
    nor did one after a step's update (its validation, log or checkpoint write)."""
    if where == "step":
        _interrupt_in_sample(monkeypatch, 6, Terminated("SIGTERM"))  # step 3's second sample
    else:
        _interrupt_after_step(monkeypatch, 3)
    path = _config(tmp_path / "b.yaml", folders, tmp_path / "b")
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "checkpoint_every": 1}))
    caplog.set_level(logging.WARNING, "mrirecon")
    with pytest.raises(KeyboardInterrupt):
        train_from_config(path, progress=False)
    assert _state(tmp_path / "b")[0] == 2
    said = [r.getMessage() for r in caplog.records if "--resume continues" in r.getMessage()]
    assert len(said) == 1 and "holds the state after step 2" in said[0], said


def test_a_fresh_run_over_a_resumable_checkpoint_warns_that_it_removed_it(folders, tmp_path,
                                                                          monkeypatch, caplog):
    """Re-running an interrupted run without ``--resume`` deletes its ``last.pt``: said at INFO
    only, easy to miss; now a warning that names ``--resume``."""
    path = _config(tmp_path / "b.yaml", folders, tmp_path / "b")
    real = T.magnitude_for_target
    _interrupt_in_sample(monkeypatch, 6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_from_config(path, progress=False)
    monkeypatch.setattr(T, "magnitude_for_target", real)
    caplog.set_level(logging.WARNING, "mrirecon")
    train_from_config(path, ["optim.max_steps=1"], progress=False)
    assert any("checkpoints/last.pt was removed (--resume would have continued it" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


# ---- the global batch across process counts ------------------------------------------------

def test_resume_keeps_the_global_batch_across_process_counts():
    """The sample order and the averaged gradient follow ``batch_size x processes``: a 1-process
    run at batch 2 resumed by 2 ranks at batch 1 was refused (a config change), while 2 ranks at
    batch 2 (a global batch of 4), or 1 process resuming a 2-rank run, went on without a word
    (weights 0.5 off, the card describing one run)."""
    from mrirecon.core.config import ConfigError
    from mrirecon.training.run_checks import resume_global_batch

    before = yaml.safe_dump({"optim": {"batch_size": 2, "lr": 1e-3}})
    now = {"optim": {"batch_size": 1, "lr": 1e-3}}
    same = resume_global_batch(before, 1, now, 2, "c.yaml")  # 1 x 2 = 2 x 1
    assert same["optim"] == {"batch_size": 2, "lr": 1e-3} and now["optim"]["batch_size"] == 1
    with pytest.raises(ConfigError, match=r"c\.yaml: optim\.batch_size: --resume continues a run "
                                          r"trained with a global batch of 2 \(optim\.batch_size "
                                          r"2 x 1 process\(es\)\); this run's is 4 \(2 x 2\).*set "
                                          r"optim\.batch_size 1 with 2 process\(es\)"):
        resume_global_batch(before, 1, {"optim": {"batch_size": 2}}, 2, "c.yaml")
    with pytest.raises(ConfigError, match=r"global batch of 4 .*this run's is 2 \(2 x 1\).*set "
                                          r"optim\.batch_size 4 with 1 process"):
        resume_global_batch(before, 2, {"optim": {"batch_size": 2}}, 1, "c.yaml")
    with pytest.raises(ConfigError, match=r"run 2 process\(es\) with optim\.batch_size 2"):
        resume_global_batch(before, 2, {"optim": {"batch_size": 1}}, 3, "c.yaml")
    # a checkpoint of an older version records no process count: the config check decides
    assert resume_global_batch(before, None, now, 2, "c.yaml") is now


def test_the_checkpoint_records_the_process_count(folders, tmp_path):
    train_from_config(_config(tmp_path / "a.yaml", folders, tmp_path / "a"),
                      ["optim.max_steps=1"], progress=False)
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 1
