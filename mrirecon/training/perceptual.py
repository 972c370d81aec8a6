"""Perceptual loss on the features of a small CNN trained here, on simulated MNI152 brain slices.

No downloaded network (VGG, ...) is used. :class:`FeatureNetwork` is the encoder of a denoising
autoencoder trained by :func:`train_feature_network` to turn zero-filled, randomly undersampled
and noisy magnitude images of MNI152 template slices (random contrast, orientation, flips) back
into the clean slices; its features therefore respond to anatomy and to undersampling artefacts.
The shipped weights ``mrirecon/weights/perceptual_features.pt`` (+ the card ``.yaml``) are made by

    mrirecon train perceptual --out mrirecon/weights/perceptual_features.pt

:class:`PerceptualLoss` compares the features of the prediction and the target (both divided by
the target's data range) layer by layer, mean squared difference divided by the layer's mean
feature energy on the training images (a buffer of the network), averaged over layers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mrirecon.functional import fft2c, ifft2c
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")

WEIGHTS_NAME = "perceptual_features"
CHANNELS = (16, 32, 64)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.2),
    )


class FeatureNetwork(nn.Module):
    """Three-stage CNN encoder: ``(B, 1, H, W)`` image -> features at full, 1/2 and 1/4 size.

    Stage ``i`` has ``channels[i]`` channels (two 3 x 3 convolutions with leaky ReLU); stages
    after the first start with a 2 x 2 average pooling. ``feature_scale`` ``(stages,)`` holds the
    mean squared feature value of each stage on clean training images (the perceptual loss's
    per-layer normalisation); it is set by :func:`train_feature_network`.

    Images are expected at unit scale (divided by their data range, values about ``[0, 1]``).
    """

    def __init__(self, channels: Sequence[int] = CHANNELS) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"FeatureNetwork: channels must be positive integers, got {channels}")
        self.channels = channels
        self.stages = nn.ModuleList(
            _block(cin, cout) for cin, cout in zip((1, *channels[:-1]), channels)
        )
        self.register_buffer("feature_scale", torch.ones(len(channels)))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features of every stage: ``[(B, c0, H, W), (B, c1, H/2, W/2), ...]`` (floor sizes)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"FeatureNetwork: expected (B, 1, H, W) images, got {tuple(x.shape)}")
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = nn.functional.avg_pool2d(x, 2)
            x = stage(x)
            feats.append(x)
        return feats


class _Decoder(nn.Module):
    """Training-only decoder: deepest features -> ``(B, 1, H, W)`` correction (not shipped)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        rev = tuple(reversed(tuple(channels)))
        self.ups = nn.ModuleList(_block(cin, cout) for cin, cout in itertools.pairwise(rev))
        self.out = nn.Conv2d(rev[-1], 1, 3, padding=1)

    def forward(self, f: Tensor, size: tuple[int, int]) -> Tensor:
        for up in self.ups:
            f = up(nn.functional.interpolate(f, scale_factor=2, mode="nearest"))
        f = nn.functional.interpolate(f, size=size, mode="nearest")
        return self.out(f)


def _weights_path(weights: str | os.PathLike) -> Path:
    p = Path(weights)
    if p.suffix != ".pt" and not p.is_file():
        from mrirecon.training.weights import WEIGHTS_DIR

        p = WEIGHTS_DIR / f"{p.name}.pt"
    if not p.is_file():
        raise FileNotFoundError(f"FeatureNetwork: weights file {p} does not exist")
    return p


def load_feature_network(
    weights: str | os.PathLike = WEIGHTS_NAME, map_location: str | torch.device = "cpu"
) -> FeatureNetwork:
    """The feature network from a ``.pt`` state dict (shipped name or path), frozen, eval mode.

    The channels are read from the card ``<stem>.yaml`` (``model.params.channels``) when it
    exists. Weights are read with ``torch.load(weights_only=True)``.
    """
    pt = _weights_path(weights)
    channels: Sequence[int] = CHANNELS
    card_path = pt.with_suffix(".yaml")
    if card_path.is_file():
        from mrirecon.core.yaml_loader import load_card_yaml

        card = load_card_yaml(card_path.read_text(encoding="utf-8-sig")) or {}
        channels = card.get("model", {}).get("params", {}).get("channels", CHANNELS)
    net = FeatureNetwork(channels)
    from mrirecon.io.weights import read_state_dict

    state = read_state_dict(pt, map_location, who="load_feature_network")
    from mrirecon.training.weights import load_state_into

    load_state_into(net, state, f"FeatureNetwork: {pt} does not match channels {tuple(channels)}")
    net.requires_grad_(False)
    return net.eval()


class PerceptualLoss(nn.Module):
    """Feature-space distance between prediction and target magnitudes.

    ``loss = mean_l  mean((phi_l(x / r) - phi_l(t / r))^2) / feature_scale_l`` with ``r`` each
    sample's data range (``max_value``) and ``phi_l`` the stages of a frozen
    :class:`FeatureNetwork`. Zero exactly when prediction and target are equal; not invariant
    to intensity scaling, shifts or flips of the prediction. Gradients flow to the prediction
    only (the network's parameters do not require gradients).

    Parameters
    ----------
    network
        A feature network; default: the shipped ``perceptual_features`` weights.
    layers
        Indices of the stages used (default: all).

    Call as ``loss(prediction, target, max_value)`` with real ``(B, h, w)`` images and
    ``max_value`` ``(B,)``; returns a scalar. The network follows the prediction's device and
    dtype.
    """

    def __init__(
        self, network: FeatureNetwork | None = None, layers: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        net = network if network is not None else load_feature_network()
        net.requires_grad_(False)
        self.network = net.eval()
        n = len(net.stages)
        self.layers = tuple(range(n)) if layers is None else tuple(int(i) for i in layers)
        if not self.layers or not all(0 <= i < n for i in self.layers):
            raise ValueError(f"PerceptualLoss: layers must be in [0, {n}), got {self.layers}")

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.network.eval()  # frozen: always in evaluation mode
        return self

    def forward(self, prediction: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        if prediction.shape != target.shape or prediction.ndim != 3:
            raise ValueError(
                f"PerceptualLoss: prediction {tuple(prediction.shape)} and target "
                f"{tuple(target.shape)} must both be (B, h, w)"
            )
        if prediction.is_complex() or target.is_complex():
            raise TypeError("PerceptualLoss: expected real magnitude images, got complex")
        ref = self.network.feature_scale
        if ref.device != prediction.device or ref.dtype != prediction.dtype:
            self.network.to(device=prediction.device, dtype=prediction.dtype)
        scale = torch.as_tensor(max_value, dtype=prediction.dtype, device=prediction.device)
        scale = scale.reshape(-1)
        if scale.numel() != prediction.shape[0]:
            raise ValueError(
                f"PerceptualLoss: {scale.numel()} max values for a batch of {prediction.shape[0]}"
            )
        scale = scale[:, None, None, None]
        fx = self.network(prediction.unsqueeze(1) / scale)
        ft = self.network(target.detach().unsqueeze(1) / scale)
        norm = self.network.feature_scale
        terms = [(fx[i] - ft[i]).square().mean() / norm[i] for i in self.layers]
        return torch.stack(terms).mean()


# ---- training data: MNI152 slices with undersampling artefacts ------------------------------


def brain_slices(count: int, size: int, seed: int) -> Tensor:
    """``(count, size, size)`` float32 magnitude slices of the MNI152 template, max 1 each.

    Random contrast (T1 / T2 / PD / FLAIR, tissue values jittered), random axis (axial, coronal,
    sagittal) and position in the central 70 % of the head, skull and scalp shells, random
    flips, zero-padded to a square and resampled to ``size``.
    """
    from scipy import ndimage

    from mrirecon.data.anatomy import CONTRASTS, head_shells, load_mni_brain, tissue_image

    tpl = load_mni_brain(resolution=2)  # distance map on the same 2 mm grid
    rng = np.random.default_rng(seed)
    names = sorted(CONTRASTS)
    out = np.zeros((count, size, size), dtype=np.float32)
    for i in range(count):
        axis = int(rng.integers(3))
        n = tpl.t1.shape[axis]
        k = int(rng.integers(int(0.15 * n), int(0.85 * n)))
        skull, scalp = head_shells(np.take(tpl.distance_mm, k, axis=axis))
        maps = [np.take(a, k, axis=axis) for a in (tpl.t1, tpl.gm, tpl.wm, tpl.csf)]
        maps += [skull, scalp]
        img = tissue_image(names[int(rng.integers(len(names)))], *maps, rng=rng, jitter=0.1)
        img = np.rot90(img)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1]
        side = max(img.shape)
        sq = np.zeros((side, side))
        r0, c0 = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
        sq[r0 : r0 + img.shape[0], c0 : c0 + img.shape[1]] = img
        sq = np.clip(ndimage.zoom(sq, size / side, order=1)[:size, :size], 0, None)
        out[i, : sq.shape[0], : sq.shape[1]] = sq / max(float(sq.max()), 1e-6)
    return torch.from_numpy(out)


def corrupt(clean: Tensor, generator: torch.Generator) -> Tensor:
    """Zero-filled magnitude of randomly undersampled (columns) and noisy k-space of ``clean``.

    ``clean`` ``(B, H, W)`` real. Per image: a smooth random phase, a random column mask
    (acceleration 2-8, centre fraction 0.04-0.16, the rest drawn uniformly), complex Gaussian
    noise of standard deviation 0-3 % of the maximum in image space. Returns ``(B, H, W)``.
    """
    b, h, w = clean.shape
    g = generator
    yy = torch.linspace(-1, 1, h)[:, None]
    xx = torch.linspace(-1, 1, w)[None, :]
    coef = torch.randn(b, 3, generator=g)
    phase = coef[:, 0, None, None] * yy + coef[:, 1, None, None] * xx + coef[:, 2, None, None]
    x = torch.polar(clean, phase * np.pi / 2)
    sigma = 0.03 * torch.rand(b, 1, 1, generator=g)
    x = x + sigma * torch.randn(b, h, w, dtype=torch.complex64, generator=g)
    acc = 2 + 6 * torch.rand(b, generator=g)
    num_low = (w * (0.04 + 0.12 * torch.rand(b, generator=g))).round().clamp(min=1)
    cols = torch.arange(w)
    start = (w - num_low + 1) // 2
    centre = (cols[None] >= start[:, None]) & (cols[None] < (start + num_low)[:, None])
    prob = ((w / acc - num_low) / (w - num_low)).clamp(0, 1)
    mask = centre | (torch.rand(b, w, generator=g) < prob[:, None])
    k = fft2c(x) * mask[:, None, :]
    return ifft2c(k).abs()


def train_feature_network(
    *,
    steps: int = 1000,
    batch_size: int = 16,
    size: int = 64,
    num_slices: int = 600,
    held_out: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    channels: Sequence[int] = CHANNELS,
    log_every: int = 100,
) -> tuple[FeatureNetwork, dict]:
    """Train the encoder (with a throw-away decoder) to remove undersampling artefacts.

    The decoder predicts a correction added to the corrupted input (residual learning); loss:
    mean absolute error between the corrected image and the clean slice. Returns the trained
    network (``feature_scale`` set from ``held_out`` clean slices of another seed) and a
    summary dict (steps, seconds, training loss at the start and end, held-out L1 of the
    zero-filled input and of the autoencoder output).
    """
    torch.manual_seed(seed)
    net, dec = FeatureNetwork(channels), _Decoder(channels)
    slices = brain_slices(num_slices, size, seed)
    held_out_slices = brain_slices(held_out, size, seed + 1)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([*net.parameters(), *dec.parameters()], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        idx = torch.randint(num_slices, (batch_size,), generator=g)
        clean = slices[idx]
        noisy = corrupt(clean, g)
        out = noisy + dec(net(noisy[:, None])[-1], (size, size))[:, 0]
        loss = (out - clean).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            _log.info("step %d/%d  L1 %.4f", step + 1, steps, np.mean(losses[-log_every:]))
    seconds = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        ho_noisy = corrupt(held_out_slices, torch.Generator().manual_seed(seed + 2))
        ho_out = ho_noisy + dec(net(ho_noisy[:, None])[-1], (size, size))[:, 0]
        feats = net(held_out_slices[:, None])
        net.feature_scale.copy_(torch.stack([f.square().mean() for f in feats]))
    k = max(1, min(50, steps // 4))
    summary = {
        "steps": steps,
        "wall_time_s": round(seconds, 1),
        "train_l1_first": round(float(np.mean(losses[:k])), 5),
        "train_l1_last": round(float(np.mean(losses[-k:])), 5),
        "held_out_l1_zero_filled": round(float((ho_noisy - held_out_slices).abs().mean()), 5),
        "held_out_l1_autoencoder": round(float((ho_out - held_out_slices).abs().mean()), 5),
        "feature_scale": [round(float(v), 6) for v in net.feature_scale],
    }
    net.requires_grad_(False)
    return net, summary


def save_feature_network(net: FeatureNetwork, path: str | os.PathLike, card: dict) -> Path:
    """Write the state dict (``.pt``) and the card (``<stem>.yaml``) atomically."""
    from mrirecon.io.weights import write_weights

    return write_weights(path, {k: v.float() for k, v in net.state_dict().items()}, card)


def train_and_save(out: str, *, steps: int = 1000, batch_size: int = 16, size: int = 64,
                   slices: int = 600, held_out: int = 64, lr: float = 1e-3, seed: int = 0,
                   threads: int | None = None) -> dict:
    """Train the feature network and write ``out`` (.pt) with its card; returns the card.

    ``mrirecon train perceptual --out mrirecon/weights/perceptual_features.pt``. The card
    records this run (``training``: the command with every option and ``--threads``, seed,
    steps, wall time, threads); over an earlier card of the same network and recipe (all options
    but ``steps``) only that card's descriptive sections stay
    (:func:`~mrirecon.training.run_card.rebuilt_card`), never its run record.
    """
    from mrirecon.training.run_card import earlier_card

    if not str(out).endswith(".pt"):
        raise ValueError(f"out must end in .pt, got {out}")
    args = _Options(out=str(out), steps=steps, batch_size=batch_size, size=size, slices=slices,
                    held_out=held_out, lr=lr, seed=seed)
    earlier = earlier_card(out)  # before this run replaces the weights it describes
    threads = use_threads(threads)
    net, summary = train_feature_network(
        steps=args.steps,
        batch_size=args.batch_size,
        size=args.size,
        num_slices=args.slices,
        held_out=args.held_out,
        lr=args.lr,
        seed=args.seed,
    )
    card = _card(args, threads, list(net.channels), summary, earlier)
    save_feature_network(net, args.out, card)
    return card


def _card(args: _Options, threads: int, channels: list[int], summary: dict,
          earlier: dict | None) -> dict:
    """The card of a ``train perceptual`` run: :func:`~mrirecon.training.run_card.trainer_card`,
    an ``earlier`` card of the same network and recipe keeping its descriptive sections."""
    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import trainer_card

    options = {"threads": threads, "steps": args.steps, "batch_size": args.batch_size,
               "size": args.size, "slices": args.slices, "held_out": args.held_out, "lr": args.lr,
               "seed": args.seed}
    fresh = {
        "kind": "feature_network",
        "model": {"name": WEIGHTS_NAME, "params": {"channels": channels}},
        "data": {
            "source": "MNI152 2009 template via nilearn (mrirecon.data.anatomy, 2 mm): random "
            "contrast T1/T2/PD/FLAIR, axis, slice, flips, skull and scalp shells",
            "train_slices": args.slices,
            "held_out_slices": args.held_out,
            "size": [args.size, args.size],
            "corruption": "smooth random phase, complex noise 0-3 %, random column mask "
            "(acceleration 2-8, centre 0.04-0.16), zero-filled magnitude",
        },
        "training": {
            "command": trainer_command("perceptual", Path(args.out), options),
            **summary,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "schedule": "Adam, cosine annealing",
            "seed": args.seed,
            "loss": "L1(decoded, clean)",
            "hardware": f"{platform.machine()} CPU, {threads} thread(s)",
            "torch": str(torch.__version__),
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    defaults = {
        "description": (
            "Encoder of a denoising autoencoder (3 stages, 16/32/64 channels, leaky ReLU) used "
            "by mrirecon.training.perceptual.PerceptualLoss; trained here on CPU, no downloaded "
            "network. Not a reconstruction model."
        ),
        "known_failures": [
            "Not a reconstruction model: the feature encoder of mrirecon.training.perceptual."
            f"PerceptualLoss, trained by mrirecon train perceptual (see training) on {args.size} x "
            f"{args.size} zero-filled magnitudes of MNI152 slices only; on other anatomy, other "
            "image sizes or CT its feature scales (feature_scale) are untested."],
    }
    return trainer_card(train_and_save, fresh, earlier, options, ("steps",), defaults)


@dataclass(frozen=True)
class _Options:
    out: str
    steps: int
    batch_size: int
    size: int
    slices: int
    held_out: int
    lr: float
    seed: int

