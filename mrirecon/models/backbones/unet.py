"""U-Net (Ronneberger 2015) with the module layout of ``fastmri.models.Unet``.

The parameter names and shapes are those of the fastMRI reference, so a fastMRI U-Net state dict
loads with ``load_state_dict`` unchanged (``down_sample_layers.i.layers.{0,4}``, ``conv``,
``up_transpose_conv.i.layers.0``, ``up_conv.i.layers.{0,4}``, last ``up_conv.N.{0,1}``).
Real tensors only: complex images become channels in :mod:`mrirecon.models.backbones.complex`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """Two (3x3 conv -> instance norm -> LeakyReLU(0.2) -> channel dropout) stages."""

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.in_chans, self.out_chans, self.drop_prob = in_chans, out_chans, drop_prob
        stages: list[nn.Module] = []
        for cin in (in_chans, out_chans):
            stages += [
                nn.Conv2d(cin, out_chans, kernel_size=3, padding=1, bias=False),
                nn.InstanceNorm2d(out_chans),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Dropout2d(drop_prob),
            ]
        self.layers = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, out_chans, H, W)``."""
        return self.layers(x)


class TransposeConvBlock(nn.Module):
    """2x2 stride-2 transposed conv -> instance norm -> LeakyReLU(0.2): doubles H and W."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, out_chans, 2H, 2W)``."""
        return self.layers(x)


def _fits(h: int, w: int, pools: int) -> bool:
    """Whether ``pools`` halvings (floored) leave both sides >= 1 and more than one pixel."""
    return min(h, w) >= 2**pools and (h >> pools) * (w >> pools) > 1


class PoolingTooDeep(ValueError):
    """An image too small for a U-Net's pooling levels (:func:`check_size`): the trainer names
    the config's pooling settings for it."""


def check_size(h: int, w: int, pools: int, who: str = "Unet") -> None:
    """Raise :class:`PoolingTooDeep` (a ``ValueError``) naming ``who`` when an ``h x w`` image is too small for ``pools``
    levels (torch's own errors were "Expected more than 1 spatial element when training",
    in eval mode too, or "Output size is too small"), with the sizes that work."""
    if _fits(h, w, pools):
        return
    fewer = max((p for p in range(pools) if _fits(h, w, p)), default=0)
    instead = (f"or use fewer pooling levels (num_pool_layers / num_pools; at most {fewer} for "
               f"{h}x{w})" if fewer else "(this size leaves no pooling level)")
    raise PoolingTooDeep(f"{who}: image {h}x{w} is too small for num_pool_layers={pools}: both sides "
                     f"must be at least 2**{pools} = {2**pools} and one at least {2**(pools + 1)} "
                     f"(e.g. {2**pools}x{2**(pools + 1)}; the bottom level needs more than one "
                     f"pixel); pad the image {instead}")


class Unet(nn.Module):
    """U-Net with average-pool down-sampling and transposed-conv up-sampling.

    Parameters
    ----------
    in_chans, out_chans
        Input and output channels.
    chans
        Channels of the first level; doubled at each of the ``num_pool_layers`` levels.
    num_pool_layers
        Number of 2x down-/up-sampling steps.
    drop_prob
        Channel-dropout probability inside every :class:`ConvBlock`.

    Notes
    -----
    Input ``(N, in_chans, H, W)`` real; any ``H, W`` large enough for the pooling work: where a
    pooled size was odd the up-sampled map is reflect-padded by one row/column at the
    bottom/right (as fastMRI does). With ``p = num_pool_layers`` both sides must be at least
    ``2**p`` and the bottom level more than one pixel (one side at least ``2**(p + 1)``: its
    instance norm needs two values); smaller images raise ``ValueError`` (:func:`check_size`).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.chans, self.num_pool_layers, self.drop_prob = chans, num_pool_layers, drop_prob
        widths = [chans * 2**i for i in range(num_pool_layers)]  # per level
        self.down_sample_layers = nn.ModuleList(
            [ConvBlock(cin, cout, drop_prob) for cin, cout in zip([in_chans] + widths[:-1], widths)]
        )
        self.conv = ConvBlock(widths[-1], widths[-1] * 2, drop_prob)
        self.up_transpose_conv = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for level, width in enumerate(reversed(widths)):
            self.up_transpose_conv.append(TransposeConvBlock(width * 2, width))
            block = ConvBlock(width * 2, width, drop_prob)
            if level == num_pool_layers - 1:  # the last one ends in a 1x1 projection
                block = nn.Sequential(block, nn.Conv2d(width, out_chans, kernel_size=1))
            self.up_conv.append(block)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, out_chans, H, W)``."""
        check_size(x.shape[-2], x.shape[-1], self.num_pool_layers)
        skips = []
        for block in self.down_sample_layers:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        x = self.conv(x)
        for up, block in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            x = up(x)
            pad_w = int(x.shape[-1] != skip.shape[-1])
            pad_h = int(x.shape[-2] != skip.shape[-2])
            if pad_w or pad_h:
                x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
            # rebind before the block so the up-sampled map and the skip are freed while it runs
            x = torch.cat([x, skip], dim=1)
            del skip
            x = block(x)
        return x
