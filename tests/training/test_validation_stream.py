"""Validation streams volume by volume (only the current volume's slices are held); the trainer's
epoch order is computed once per epoch; an interrupted ``fit`` closes its TensorBoard writer and
progress bar."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import TINY_VARNET, TRAIN_MASK
from mrirecon.functional import center_pad
from mrirecon.metrics import crop_to_target, nmse, psnr, ssim
from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.validation import _magnitude, evaluate_reconstructor, zero_filled

VOLUMES, SLICES = 3, 3


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("val_stream")
    simulate_mri_dataset(root / "val", volumes=VOLUMES, slices=SLICES, coils=3, size=(32, 32),
                         seed=4)
    return root / "val"


class _Tracked:
    """A reconstructor returning the zero-filled image as a crop (a view) of a 2x oversampled
    buffer, as a model on readout-oversampled data does; counts the buffers still alive when
    each slice is reconstructed (weakref finalizers fire when the storage is freed)."""

    def __init__(self) -> None:
        self.made = 0
        self.freed = 0
        self.alive_at_call: list[int] = []

    def _free(self) -> None:
        self.freed += 1

    def __call__(self, sample) -> torch.Tensor:
        self.alive_at_call.append(self.made - self.freed)
        img = zero_filled(sample)  # (1, h, w)
        h, w = img.shape[-2:]
        big = center_pad(img, (2 * h, w))
        weakref.finalize(big, self._free)
        self.made += 1
        return big[..., h // 2:h // 2 + h, :]  # a view: holds the whole buffer


def test_validation_holds_one_volume_at_a_time_and_scores_as_fastmri(val_folder):
    """Every slice's target and prediction were kept to the end of the pass (18 MiB of held
    storage for 64 slices of 384 x 192, ~9.6 GB for fastMRI knee val)."""
    ds = MRITrainingSet(val_folder, MaskConfig(**TRAIN_MASK), train=False)
    assert len(ds) == VOLUMES * SLICES
    rec = _Tracked()
    report = evaluate_reconstructor(rec, ds)
    assert rec.made == VOLUMES * SLICES
    # before a slice is reconstructed, only earlier slices of its own volume are alive
    assert max(rec.alive_at_call) <= SLICES - 1, rec.alive_at_call
    assert rec.made - rec.freed == 0  # nothing left behind
    # expected: fastMRI's per-volume metrics on the stacked volume, computed here directly
    by_name: dict[str, list[int]] = {}
    for i in range(len(ds)):
        by_name.setdefault(ds.get(i).fname, []).append(i)
    assert report.names == list(by_name)
    for v, (name, idx) in enumerate(by_name.items()):
        samples = sorted((ds.get(i) for i in idx), key=lambda s: s.slice_index)
        gt = torch.stack([s.target[0] for s in samples])
        pred = torch.stack([zero_filled(s)[0] for s in samples])
        g, p = crop_to_target(gt, pred)
        for metric, fn in (("NMSE", nmse), ("PSNR", psnr), ("SSIM", ssim)):
            # the same float64 arithmetic on the same float32 images: equal to rounding
            assert report.values[metric][v] == pytest.approx(float(fn(g, p)), rel=1e-12, abs=0)


def test_volume_groups_follow_the_samples_file_names(val_folder, tmp_path):
    """``volume_keys`` (read without loading a slice) names the volume each sample comes from,
    for the three training-set classes."""
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.data_ct import CTTrainingSet
    from mrirecon.training.validation import volume_groups
    from tests.helpers import tiny_ct_part

    ct = CTTrainingSet(tiny_ct_part(tmp_path, 3), train=False)
    for ds in (MRITrainingSet(val_folder, MaskConfig(**TRAIN_MASK), train=False, max_slices=7),
               AcquiredMRISet(val_folder, train=False, max_slices=5), ct):
        names = [ds.get(i).fname for i in range(len(ds))]
        assert ds.volume_keys() == names
        groups = volume_groups(ds)
        assert sorted(i for g in groups for i in g) == list(range(len(ds)))
        assert [len({names[i] for i in g}) for g in groups] == [1] * len(groups)
        assert len(groups) == len(set(names))


def test_a_dataset_without_volume_keys_streams_its_runs_of_file_names(val_folder):
    """Any dataset with ``len`` and ``get`` still works: volumes are its runs of equal
    ``fname``; one whose volume comes back after another is refused (it cannot be scored
    one volume at a time)."""
    ds = MRITrainingSet(val_folder, MaskConfig(**TRAIN_MASK), train=False)
    expected = evaluate_reconstructor(zero_filled, ds)

    class Plain:
        train = False

        def __init__(self, order):
            self.order = order

        def __len__(self):
            return len(self.order)

        def get(self, index, mask_seed=None):
            return ds.get(self.order[index])

    got = evaluate_reconstructor(zero_filled, Plain(list(range(len(ds)))))
    assert got.names == expected.names
    for k in expected.values:
        assert got.values[k].tolist() == expected.values[k].tolist()
    with pytest.raises(ValueError, match="not consecutive"):
        evaluate_reconstructor(zero_filled, Plain([0, SLICES, 1]))


def test_the_cropped_magnitude_owns_its_storage():
    """``center_crop`` is a view: the kept crop held the whole oversampled image."""
    x = torch.randn(1, 64, 32, dtype=torch.complex64)
    target = torch.zeros(1, 32, 32)
    mag = _magnitude(x, target)
    assert mag.shape == (1, 32, 32)
    assert mag.untyped_storage().nbytes() == mag.numel() * mag.element_size()
    assert torch.equal(mag, x.abs()[..., 16:48, :])


# ---- the epoch order ---------------------------------------------------------------------------


def test_positions_draw_each_epoch_order_once(monkeypatch):
    """``randperm(n)`` ran for every sample of every step, to read one element: 1.3 ms a sample
    at 35 820 slices, 16 ms at 300 000."""
    from mrirecon.training import trainer as T

    n, batch, seed = 50, 4, 7
    calls = []
    real = torch.randperm

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    T.epoch_order.cache_clear()
    monkeypatch.setattr(torch, "randperm", counting)
    fake = SimpleNamespace(train_set=range(n), world=1, rank=0,
                           cfg=SimpleNamespace(seed=seed, optim=SimpleNamespace(batch_size=batch)))
    got = [T.Trainer._positions(fake, step) for step in range(100)]  # 400 samples, 8 epochs
    assert len(calls) == 8  # one permutation per epoch (was 400)
    monkeypatch.setattr(torch, "randperm", real)
    for step, items in enumerate(got):  # the same positions as the formula
        for j, (index, epoch, pos) in enumerate(items):
            assert (epoch, pos) == divmod(step * batch + j, n)
            order = real(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            assert index == int(order[pos])


# ---- an interrupted fit ------------------------------------------------------------------------


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"
            and t.is_alive()]


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_an_interrupted_fit_closes_its_writer_and_progress_bar(val_folder, tmp_path, monkeypatch,
                                                               error):
    """A notebook's "interrupt kernel" (or a diverged run) left one TensorBoard writer thread
    running per run, and the progress bar open."""
    pytest.importorskip("tensorboard")
    from mrirecon.models.registry import build_model
    from mrirecon.training import trainer as T
    from mrirecon.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from mrirecon.training.losses import ReconstructionLoss

    cfg = TrainConfig(name="t", output_dir=str(tmp_path / "out"),
                      data=DataConfig(train=str(val_folder), val=""),
                      model=ModelConfig("varnet", dict(TINY_VARNET)),
                      optim=OptimConfig(lr=1e-3, max_steps=10), device="cpu", log_every=1,
                      val_every=0, checkpoint_every=100, tensorboard=True)
    ds = MRITrainingSet(val_folder, MaskConfig(**TRAIN_MASK), train=True)
    trainer = T.Trainer(cfg, build_model("varnet", **TINY_VARNET), ds,
                        loss_fn=ReconstructionLoss(), progress=True)
    bars = []
    made = T._progress
    monkeypatch.setattr(T, "_progress", lambda *a: bars.append(made(*a)) or bars[-1])
    step = T.Trainer._train_step

    def interrupted(self):
        if self.step == 3:
            raise error("stop")
        return step(self)

    monkeypatch.setattr(T.Trainer, "_train_step", interrupted)
    before = len(_writer_threads())
    with pytest.raises(error):
        trainer.fit()
    assert len(_writer_threads()) == before
    assert len(bars) == 1 and bars[0].disable  # tqdm.close() disables the bar
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluating_a_training_set_draws_each_slice_its_own_mask_seed():
    """Fails if every slice of a train=True set scored with mask seed 0: one mask for all."""
    import types

    from mrirecon.training.validation import evaluate_reconstructor

    seen = []

    class Set:
        train = True

        def __len__(self):
            return 4

        def volume_keys(self):
            return ["v0", "v0", "v1", "v1"]

        def get(self, i, mask_seed=None):
            seen.append((i, mask_seed))
            t = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) + 0.5
            return types.SimpleNamespace(fname=f"v{i // 2}", slice_index=i % 2, target=t)

    report = evaluate_reconstructor(lambda s: s.target * 0.9, Set())
    assert sorted(seen) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert len(report.values["PSNR"]) == 2
    Set.train = False
    seen.clear()
    evaluate_reconstructor(lambda s: s.target * 0.9, Set())
    assert sorted(seen) == [(i, None) for i in range(4)]  # validation: the files' fixed masks


def test_validate_model_restores_eval_mode():
    """Fails if validation.py ``model.train(was_training)`` -> ``model.train(True)``: validating
    a model the caller put in eval mode (the pipeline's adapt stage, a notebook) switched it to
    training mode, so dropout / batch-norm statistics changed behind the caller's back."""
    from mrirecon.training.validation import validate_model

    class Set:
        train = False

        def __len__(self):
            return 2

        def get(self, i, mask_seed=None):
            t = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) + 0.5
            return SimpleNamespace(fname="v0", slice_index=i, target=t, y=t,
                                         operator=lambda: None,
                                         to=lambda device, _t=t: SimpleNamespace(
                                             y=_t, target=_t, operator=lambda: None))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, y, op):
            return self.drop(y)

    for mode in (False, True):
        net = Net().train(mode)
        validate_model(net, Set())
        assert net.training is mode
