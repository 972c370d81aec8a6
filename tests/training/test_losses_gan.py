"""Adversarial losses: patch discriminator shapes, GAN objectives, no gradient leakage between
generator and discriminator, and a config-driven training run with SSIM + L1 + perceptual +
adversarial weights (discriminator stepped, checkpointed, resumable)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.helpers import TINY_VARNET, TRAIN_MASK, simulated_mri_split
from mrirecon.training.losses_gan import (
    AdversarialCritic,
    PatchDiscriminator,
    discriminator_adversarial_loss,
    frozen,
    generator_adversarial_loss,
)

MODES = ("nonsaturating", "lsgan")


def test_patch_discriminator_output_shape():
    torch.manual_seed(0)
    d = PatchDiscriminator(features=8, layers=3)
    x = torch.rand(2, 32, 48)
    out = d(x)
    assert out.shape == (2, 1, 4, 6) == (2, 1, *d.output_shape(32, 48))
    assert torch.equal(d(x[:, None]), out)  # (B, 1, h, w) input gives the same map
    assert d(torch.rand(1, 37, 21)).shape == (1, 1, *d.output_shape(37, 21)) == (1, 1, 4, 2)
    # a patch map, not a global score: changing one corner leaves far patches unchanged
    y = x.clone()
    y[:, :4, :4] += 1.0
    diff = (d(y) - out).abs()[0, 0]
    assert diff[0, 0] > 0 and diff[-1, -1] == 0
    with pytest.raises(ValueError, match=r"PatchDiscriminator: images of \(4, 4\) are smaller"):
        d(torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match=r"expected \(B, 1, h, w\)"):
        d(torch.rand(1, 2, 16, 16))
    with pytest.raises(TypeError, match="complex"):
        d(torch.rand(1, 16, 16, dtype=torch.complex64))


@pytest.mark.parametrize("mode", MODES)
def test_objectives_on_constructed_logits(mode):
    fooled = torch.full((2, 1, 3, 3), 3.0)  # the discriminator calls the reconstruction real
    caught = torch.full((2, 1, 3, 3), -3.0)  # ... or fake
    assert generator_adversarial_loss(fooled, mode) < generator_adversarial_loss(caught, mode)
    # monotone in how real the reconstruction looks
    values = [
        generator_adversarial_loss(torch.full((1, 1, 2, 2), float(v)), mode) for v in (-2, 0, 1)
    ]
    assert values[0] > values[1] > values[2]
    # the discriminator's loss is low when it is right, high when it is fooled
    right = discriminator_adversarial_loss(fooled, caught, mode)
    wrong = discriminator_adversarial_loss(caught, fooled, mode)
    assert right < wrong
    if mode == "nonsaturating":  # closed forms
        s = torch.tensor(3.0)
        assert generator_adversarial_loss(fooled, mode) == pytest.approx(
            float(-torch.log(torch.sigmoid(s))), rel=1e-6
        )
        assert right == pytest.approx(float(-2 * torch.log(torch.sigmoid(s))), rel=1e-6)
    else:
        assert generator_adversarial_loss(fooled, mode) == pytest.approx(0.5 * 4.0)
        assert right == pytest.approx(0.5 * (4.0 + 9.0))
    with pytest.raises(ValueError, match="mode must be one of"):
        generator_adversarial_loss(fooled, "wgan")


def _images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """'Real' smooth blobs and 'fake' versions of them with stripes (aliasing-like)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 0.6 - 0.3
    real = torch.exp(-((xx - c[:, :1, None]) ** 2 + (yy - c[:, 1:, None]) ** 2) * 4)
    fake = real + 0.2 * torch.cos(xx * 16)[None]
    return real, fake


@pytest.mark.parametrize("mode", MODES)
def test_generator_loss_lower_when_discriminator_is_fooled(mode):
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    critic = AdversarialCritic(PatchDiscriminator(features=8, layers=2), mode=mode, lr=3e-3)
    m = torch.ones(4)
    before = critic.discriminator_loss(*_images(4, g), m).item()
    for _ in range(40):
        real, fake = _images(4, g)
        critic.discriminator_step([(fake, real, m)])
    real, fake = _images(4, g)
    assert critic.discriminator_loss(real, fake, m).item() < 0.5 * before  # it learned
    # an output that looks like the real data fools it: lower generator loss
    assert critic.generator_loss(real, m) < critic.generator_loss(fake, m)
    # images are compared at unit scale: scaling an image and its max together changes nothing
    assert critic.generator_loss(3 * fake, 3 * m).item() == pytest.approx(
        critic.generator_loss(fake, m).item(), rel=1e-5
    )


def test_no_gradient_leakage():
    torch.manual_seed(0)
    gen = nn.Conv2d(1, 1, 3, padding=1)
    critic = AdversarialCritic(PatchDiscriminator(features=4, layers=2))
    d_params = list(critic.discriminator.parameters())
    x, target, m = torch.rand(2, 1, 16, 16), torch.rand(2, 16, 16), torch.ones(2)

    # generator loss: gradients reach the generator, never the discriminator
    pred = gen(x)[:, 0]
    critic.generator_loss(pred, m).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    assert all(p.grad is None for p in d_params)
    assert all(p.requires_grad for p in d_params)  # flags restored after freezing

    # discriminator loss / step: gradients reach the discriminator, never the generator
    gen.zero_grad(set_to_none=True)
    pred = gen(x)[:, 0]
    critic.discriminator_loss(target, pred, m).backward()
    assert all(p.grad is None for p in gen.parameters())
    assert all(p.grad is not None for p in d_params)
    before = [p.detach().clone() for p in d_params]
    loss = critic.discriminator_step([(pred, target, m)])
    assert math.isfinite(loss) and loss > 0
    assert all(p.grad is None for p in gen.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, d_params))  # it stepped

    # frozen() restores whatever was set before, also when the body raises
    d_params[0].requires_grad_(False)
    with pytest.raises(RuntimeError), frozen(critic.discriminator):
        raise RuntimeError
    assert not d_params[0].requires_grad and d_params[1].requires_grad


# ---- config-driven training with all four terms --------------------------------------------


MASK = TRAIN_MASK
LOSS = {"ssim": 1.0, "l1": 0.1, "perceptual": 0.05, "adversarial": 0.01}


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> dict[str, Path]:
    return simulated_mri_split(tmp_path_factory.mktemp("gan_sim"), val_slices=1)


def _config(tmp_path: Path, data: dict[str, Path], out: Path, steps: int) -> Path:
    cfg = {
        "name": "gan",
        "output_dir": str(out),
        "seed": 3,
        "device": "cpu",
        "data": {"train": str(data["train"]), "val": str(data["val"]), "mask": MASK},
        "model": {"name": "varnet", "params": dict(TINY_VARNET)},
        "optim": {"lr": 1e-2, "max_steps": steps, "batch_size": 2},
        "loss": dict(LOSS, discriminator_lr=1e-3),
        "log_every": 1,
        "val_every": 0,
        "checkpoint_every": 1,
        "tensorboard": False,
    }
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _generator_loss(model, loss_fn, critic, ds) -> float:
    """Mean SSIM + L1 + perceptual + adversarial loss over fixed-mask samples."""
    from mrirecon.training.trainer import magnitude_for_target

    total = 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            s = ds.get(i)
            pred = magnitude_for_target(model(s.y, s.operator()), s.target)
            adv = critic.generator_loss(pred, s.max_value)
            total += float(loss_fn(pred, s.target, s.max_value) + LOSS["adversarial"] * adv)
    return total / len(ds)


def test_training_with_all_loss_terms(tmp_path, sim_data):
    from mrirecon.training.config import LossConfig, MaskConfig
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.losses import ReconstructionLoss
    from mrirecon.training.run import build_model_from_config, train_from_config

    result = train_from_config(_config(tmp_path, sim_data, tmp_path / "a", 3), progress=False)
    cfg = result.config
    assert cfg.loss == LossConfig(**LOSS, discriminator_lr=1e-3)
    rows = list(csv.DictReader((tmp_path / "a" / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["disc_loss"])) and float(r["disc_loss"]) > 0 for r in rows)

    # the generator loss on fixed samples went down (discriminator fixed at its final state)
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    critic = AdversarialCritic()
    critic.load_checkpoint_state(ckpt["critic"])
    torch.manual_seed(cfg.seed)
    untrained = build_model_from_config(cfg)
    ds = MRITrainingSet(sim_data["train"], MaskConfig(**MASK), train=False)
    loss_fn = ReconstructionLoss(cfg.loss)
    assert loss_fn.perceptual is not None
    before = _generator_loss(untrained, loss_fn, critic, ds)
    after = _generator_loss(result.model, loss_fn, critic, ds)
    assert after < before

    # the discriminator trained from its own seed: it moved, and the run is resumable bit for bit
    torch.manual_seed(cfg.seed + 1)
    init = AdversarialCritic().discriminator.state_dict()
    assert any(not torch.equal(init[k], ckpt["critic"]["discriminator"][k]) for k in init)
    split = _config(tmp_path, sim_data, tmp_path / "b", 3)
    from mrirecon.training.run import train_from_config as run

    run(split, ["optim.max_steps=2"], progress=False)
    rb = run(split, resume=True, progress=False)
    ref = result.model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in rb.model.state_dict().items())
    cb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["critic"]
    assert all(
        torch.equal(v, cb["discriminator"][k]) for k, v in ckpt["critic"]["discriminator"].items()
    )
    lb = list(csv.DictReader((tmp_path / "b" / "train_log.csv").open()))
    assert [r["loss"] for r in lb] == [r["loss"] for r in rows]


def test_loss_config_validation(tmp_path, sim_data):
    from mrirecon.core.config import ConfigError
    from mrirecon.training.config import LossConfig
    from mrirecon.training.losses import ReconstructionLoss
    from mrirecon.training.run import train_from_config

    cfg = _config(tmp_path, sim_data, tmp_path / "bad", 1)
    with pytest.raises(ConfigError, match=r"loss\.adversarial_mode: must be one of"):
        train_from_config(cfg, ["loss.adversarial_mode=wgan"], progress=False)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        ReconstructionLoss(LossConfig(ssim=1.0, perceptual=-0.1))
    # an adversarial-only loss is allowed (the trainer adds that term)
    assert ReconstructionLoss(LossConfig(ssim=0.0, adversarial=0.1)).perceptual is None


def test_discriminator_step_returns_the_mean_of_its_items_losses():
    from mrirecon.training.losses_gan import AdversarialCritic, PatchDiscriminator

    torch.manual_seed(0)
    critic = AdversarialCritic(PatchDiscriminator(features=4, layers=2))
    g = torch.Generator().manual_seed(1)
    items = [(torch.rand(1, 16, 16, generator=g), torch.rand(1, 16, 16, generator=g),
              torch.ones(1)) for _ in range(3)]
    with torch.no_grad():  # the losses before the step, which the step returns
        each = [critic.discriminator_loss(t, p, m).item() for p, t, m in items]
    got = critic.discriminator_step(items)
    # float32 sums of a few hundred logits: ~1e-6 relative; the mean, not the sum (3x)
    assert got == pytest.approx(sum(each) / len(each), rel=1e-5)


def test_patch_discriminator_takes_images_of_exactly_2_pow_layers():
    from mrirecon.training.losses_gan import PatchDiscriminator

    d = PatchDiscriminator(features=2, layers=3)
    assert d(torch.rand(1, 8, 8)).shape == (1, 1, *d.output_shape(8, 8)) == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="smaller than"):
        d(torch.rand(1, 7, 8))
