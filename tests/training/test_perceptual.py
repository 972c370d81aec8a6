"""Perceptual loss: shipped feature network (weights-only load, card), zero only for equal
images, sensitive to what it should be, differentiable, combined with SSIM / L1 in the training
loss, and the training script."""

from __future__ import annotations

import pytest
import torch
import yaml

from mrirecon.training.config import LossConfig
from mrirecon.training.losses import ReconstructionLoss
from mrirecon.training.perceptual import (
    WEIGHTS_NAME,
    FeatureNetwork,
    PerceptualLoss,
    brain_slices,
    corrupt,
    load_feature_network,
)
from mrirecon.training.weights import WEIGHTS_DIR, available_weights


def _brain(size: int = 32) -> torch.Tensor:
    """A smooth synthetic head-like image (two ellipses and a few blobs), max 1, (1, H, W)."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64),
        torch.linspace(-1, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    head = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 < 1).double()
    brain = ((xx / 0.65) ** 2 + (yy / 0.75) ** 2 < 1).double()
    blobs = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) * 40) + torch.exp(
        -((xx + 0.3) ** 2 + (yy - 0.3) ** 2) * 60
    )
    img = 0.3 * head + 0.4 * brain + 0.3 * blobs
    return (img / img.max()).float()[None]


@pytest.fixture(scope="module")
def loss() -> PerceptualLoss:
    return PerceptualLoss()


def test_shipped_weights_and_card():
    pt = WEIGHTS_DIR / f"{WEIGHTS_NAME}.pt"
    assert pt.stat().st_size < 2 * 2**20
    state = torch.load(pt, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    card = yaml.safe_load(pt.with_suffix(".yaml").read_text())
    assert card["kind"] == "feature_network" and card["model"]["name"] == WEIGHTS_NAME
    assert "MNI152" in card["data"]["source"]
    t = card["training"]
    assert t["steps"] > 0 and t["wall_time_s"] > 0 and "mrirecon train perceptual" in t["command"]
    # it learned its task: artefacts removed better than zero filling, on held-out slices
    assert t["held_out_l1_autoencoder"] < t["held_out_l1_zero_filled"]
    assert t["train_l1_last"] < t["train_l1_first"]
    net = FeatureNetwork(card["model"]["params"]["channels"])
    net.load_state_dict(state, strict=True)
    assert torch.allclose(net.feature_scale, torch.tensor(t["feature_scale"]), rtol=1e-4)
    loaded = load_feature_network()
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    # a loss network, not a reconstruction model
    assert WEIGHTS_NAME not in available_weights()
    with pytest.raises(FileNotFoundError, match="nowhere.pt does not exist"):
        load_feature_network("nowhere.pt")


def test_feature_weights_of_other_channels_are_named(tmp_path):
    """A card whose channels do not fit the state dict: the shapes differ, which escaped the
    key check as torch's RuntimeError ("Error(s) in loading state_dict ... size mismatch")."""
    channels = [8, 16]
    torch.save(FeatureNetwork(channels).state_dict(), tmp_path / "f.pt")
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"model": {"params": {"channels": [8, 32]}}}))
    with pytest.raises(ValueError, match=r"FeatureNetwork: .*f\.pt does not match channels \(8, 32\): "
                                         r"size mismatch for"):
        load_feature_network(tmp_path / "f.pt")


def test_zero_iff_equal_and_sensitivity(loss):
    t = _brain()
    m = torch.ones(1)
    assert loss(t, t, m).item() == 0.0
    g = torch.Generator().manual_seed(0)
    changed = {
        "scaled": 0.9 * t,
        "shifted": torch.roll(t, 1, dims=-1),
        "flipped": t.flip(-1),
        "transposed": t.transpose(-2, -1),
        "blurred": torch.nn.functional.avg_pool2d(t[None], 3, 1, 1, count_include_pad=False)[0],
        "noisy": t + 0.02 * torch.randn(t.shape, generator=g),
        "undersampled": corrupt(t, torch.Generator().manual_seed(1)),
        "offset": t + 0.05,
    }
    values = {k: loss(v, t, m).item() for k, v in changed.items()}
    assert all(v > 1e-4 for v in values.values()), values
    # more damage, larger loss
    mild = loss(t + 0.01 * torch.randn(t.shape, generator=g), t, m)
    strong = loss(t + 0.05 * torch.randn(t.shape, generator=g), t, m)
    assert strong > 4 * mild
    assert loss(0.5 * t, t, m) > loss(0.9 * t, t, m)
    # not symmetric by construction, but equal scale convention: (c x, c t, c max) is unchanged
    x = changed["noisy"]
    assert loss(3 * x, 3 * t, 3 * m).item() == pytest.approx(loss(x, t, m).item(), rel=1e-5)
    # batched: the mean of per-sample losses
    both = loss(torch.cat([x, t]), torch.cat([t, t]), torch.ones(2))
    assert both.item() == pytest.approx(loss(x, t, m).item() / 2, rel=1e-5)


def test_differentiable(loss):
    t = _brain(12).double()
    x = t + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2), dtype=t.dtype)
    x.requires_grad_(True)
    m = torch.ones(1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: loss(a, t, m), (x,), eps=1e-6, atol=1e-6)
    loss(x, t, m).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.network.parameters())
    # descending the loss moves the image towards the target
    x = (t + 0.1).clone().float().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-2)
    start = loss(x, t.float(), m.float()).item()
    for _ in range(20):
        opt.zero_grad()
        loss(x, t.float(), m.float()).backward()
        opt.step()
    assert loss(x, t.float(), m.float()).item() < 0.5 * start
    assert (x - t).abs().mean() < 0.1
    loss.float()


def test_errors(loss):
    t = _brain()
    with pytest.raises(ValueError, match=r"PerceptualLoss: prediction \(1, 32, 32\) and target"):
        loss(t, t[..., :16], torch.ones(1))
    with pytest.raises(ValueError, match="2 max values for a batch of 1"):
        loss(t, t, torch.ones(2))
    with pytest.raises(ValueError, match=r"layers must be in \[0, 3\)"):
        PerceptualLoss(layers=(3,))


def test_reconstruction_loss_combines_terms(loss):
    g = torch.Generator().manual_seed(0)
    t = _brain().repeat(2, 1, 1)
    x = t + 0.05 * torch.randn(t.shape, generator=g)
    m = torch.tensor([1.0, 2.0])
    combo = ReconstructionLoss(LossConfig(ssim=1.0, l1=0.1, perceptual=0.05, adversarial=0.01))
    parts = ReconstructionLoss(LossConfig(ssim=1.0, l1=0.1))(x, t, m) + 0.05 * loss(x, t, m)
    assert combo(x, t, m).item() == pytest.approx(parts.item(), rel=1e-5)
    assert combo(t, t, m).item() == pytest.approx(0.0, abs=1e-6)


def test_training_script(tmp_path):
    out = tmp_path / "feat.pt"
    from mrirecon.cli import main

    argv = ["train", "perceptual", "--out", str(out), "--steps", "4", "--slices", "6", "--size",
            "32", "--held-out", "4"]
    assert main(argv) == 0
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert card["training"]["steps"] == 4 and card["data"]["size"] == [32, 32]
    net = load_feature_network(out)
    assert (net.feature_scale > 0).all()
    x = _brain()
    assert PerceptualLoss(net)(x * 0.8, x, torch.ones(1)).item() > 0
    with pytest.raises(SystemExit):  # the output must be a .pt file: exit 2, nothing written
        main(["train", "perceptual", "--out", str(tmp_path / "feat.bin")])
    assert not (tmp_path / "feat.bin").exists()
    # the training slices: MNI152 template slices, a function of the seed, unit maximum
    a, b = brain_slices(3, 32, seed=5), brain_slices(3, 32, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, brain_slices(3, 32, seed=6))
    assert torch.allclose(a.amax(dim=(-2, -1)), torch.ones(3))
    assert ((a > 0.05).float().mean(dim=(-2, -1)) > 0.2).all()  # a head fills the field of view
