"""Adversarial training: a patch discriminator, GAN losses and the discriminator's update.

The generator is the reconstruction model; the discriminator sees real ``(B, h, w)`` magnitude
images divided by their data range (``max_value``, the target volume's maximum) and returns a
map of logits, one per overlapping patch (PatchGAN). Two objectives are available:

``"nonsaturating"``
    Discriminator ``-log D(t) - log(1 - D(x))``, generator ``-log D(x)`` with ``D = sigmoid``
    of the logits (computed as ``softplus`` for stability).
``"lsgan"``
    Least squares: discriminator ``((D(t) - 1)^2 + D(x)^2) / 2``, generator
    ``(D(x) - 1)^2 / 2`` on the raw outputs.

Gradients are kept apart: :meth:`AdversarialCritic.generator_loss` evaluates the discriminator
with its parameters frozen (no ``.grad`` ever reaches them from the generator's loss) and
:meth:`AdversarialCritic.discriminator_loss` detaches the reconstruction (no gradient reaches
the generator from the discriminator's loss).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

Mode = Literal["nonsaturating", "lsgan"]
MODES = ("nonsaturating", "lsgan")


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: ``(B, h, w)`` or ``(B, 1, h, w)`` image -> ``(B, 1, h', w')`` logits.

    ``layers`` convolutions of kernel 4, stride 2, padding 1 (channels ``features * 2**i``,
    leaky ReLU 0.2; no normalisation layer, so every logit depends on its patch only) followed
    by a 3 x 3 convolution to one channel, so ``h' = h // 2**layers`` (floor at every layer) and likewise
    ``w'``. Each logit sees a ``5 * 2**layers - 2`` pixel square patch of the input (38 for
    3 layers). Images need at least ``2**layers`` pixels per side.

    Parameters
    ----------
    in_channels
        Input channels (1 for magnitude images).
    features
        Channels of the first layer.
    layers
        Number of stride-2 layers.
    """

    def __init__(self, in_channels: int = 1, features: int = 16, layers: int = 3) -> None:
        super().__init__()
        if min(in_channels, features, layers) < 1:
            raise ValueError(
                f"PatchDiscriminator: in_channels, features and layers must be >= 1, got "
                f"{in_channels}, {features}, {layers}"
            )
        self.in_channels, self.layers = int(in_channels), int(layers)
        mods: list[nn.Module] = []
        cin = in_channels
        for i in range(layers):
            cout = features * 2**i
            mods += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size ``(h', w')`` of the logit map for an ``(h, w)`` input."""
        for _ in range(self.layers):
            h, w = h // 2, w // 2
        return h, w

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchDiscriminator: expected (B, {self.in_channels}, h, w) images, got "
                f"{tuple(x.shape)}"
            )
        if x.is_complex():
            raise TypeError("PatchDiscriminator: expected real images (magnitudes), got complex")
        if min(x.shape[-2:]) < 2**self.layers:
            raise ValueError(
                f"PatchDiscriminator: images of {tuple(x.shape[-2:])} are smaller than "
                f"2**layers = {2**self.layers}"
            )
        return self.net(x)


def _check_mode(mode: str, who: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")


def generator_adversarial_loss(fake_logits: Tensor, mode: Mode = "nonsaturating") -> Tensor:
    """Generator objective on the discriminator's logits of reconstructions (mean over patches)."""
    _check_mode(mode, "generator_adversarial_loss")
    if mode == "nonsaturating":
        return F.softplus(-fake_logits).mean()  # -log sigmoid(D(x))
    return 0.5 * (fake_logits - 1).square().mean()


def discriminator_adversarial_loss(
    real_logits: Tensor, fake_logits: Tensor, mode: Mode = "nonsaturating"
) -> Tensor:
    """Discriminator objective: real patches towards 1, reconstructed ones towards 0."""
    _check_mode(mode, "discriminator_adversarial_loss")
    if mode == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return 0.5 * ((real_logits - 1).square().mean() + fake_logits.square().mean())


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``module``.

    Graphs built inside treat the parameters as constants, so a later ``backward`` leaves
    their ``.grad`` untouched; the previous flags are restored on exit.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _unit(x: Tensor, max_value: Tensor) -> Tensor:
    if x.ndim != 3:
        raise ValueError(f"AdversarialCritic: expected (B, h, w) magnitudes, got {tuple(x.shape)}")
    scale = torch.as_tensor(max_value, dtype=x.dtype, device=x.device).reshape(-1)
    if scale.numel() != x.shape[0]:
        raise ValueError(
            f"AdversarialCritic: {scale.numel()} max values for a batch of {x.shape[0]}"
        )
    return x / scale[:, None, None]


class AdversarialCritic(nn.Module):
    """A discriminator with its own Adam optimiser and objective, for one GAN training run.

    Parameters
    ----------
    discriminator
        Default: ``PatchDiscriminator()``.
    mode
        ``"nonsaturating"`` or ``"lsgan"``.
    lr, betas
        Adam settings of the discriminator (``betas=(0.5, 0.999)`` as usual for GANs).

    Use per generator step: add ``w * critic.generator_loss(x, max_value)`` to the generator's
    loss, back-propagate and step the generator, then call
    ``critic.discriminator_step([(x.detach(), target, max_value), ...])``.
    """

    def __init__(
        self,
        discriminator: nn.Module | None = None,
        *,
        mode: Mode = "nonsaturating",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__()
        _check_mode(mode, "AdversarialCritic")
        if not lr > 0:
            raise ValueError(f"AdversarialCritic: discriminator lr must be > 0, got {lr}")
        self.mode = mode
        self.discriminator = discriminator if discriminator is not None else PatchDiscriminator()
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)

    def generator_loss(self, prediction: Tensor, max_value: Tensor) -> Tensor:
        """Adversarial loss of reconstructions ``(B, h, w)``; gradients reach only ``prediction``."""
        with frozen(self.discriminator):
            logits = self.discriminator(_unit(prediction, max_value))
        return generator_adversarial_loss(logits, self.mode)

    def discriminator_loss(self, target: Tensor, prediction: Tensor, max_value: Tensor) -> Tensor:
        """Discriminator loss on real ``target`` and (detached) ``prediction``, both ``(B, h, w)``."""
        real = self.discriminator(_unit(target.detach(), max_value))
        fake = self.discriminator(_unit(prediction.detach(), max_value))
        return discriminator_adversarial_loss(real, fake, self.mode)

    def discriminator_step(self, batch: Sequence[tuple[Tensor, Tensor, Tensor]]) -> float:
        """One optimiser step of the discriminator over ``(prediction, target, max_value)`` items.

        Items may differ in size; their losses are averaged. Under ``torch.distributed`` the
        gradients are averaged over processes before the step. Returns the mean loss.
        """
        if not batch:
            raise ValueError("AdversarialCritic.discriminator_step: empty batch")
        self.discriminator.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for prediction, target, max_value in batch:
            loss = self.discriminator_loss(target, prediction, max_value) / len(batch)
            loss.backward()
            total += float(loss.detach())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for p in self.discriminator.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
            t = torch.tensor([total], dtype=torch.float64, device=next(self.parameters()).device)
            dist.all_reduce(t)
            total = float(t) / world
        self.optimizer.step()
        return total

    def checkpoint_state(self) -> dict:
        """Discriminator and optimiser state (for resumable checkpoints)."""
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_checkpoint_state(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
